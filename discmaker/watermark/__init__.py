"""discmaker.watermark."""

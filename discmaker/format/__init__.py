"""discmaker.format."""

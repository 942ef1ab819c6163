"""discmaker.check."""

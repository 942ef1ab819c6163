"""discmaker.ui."""

"""discmaker.crypto."""

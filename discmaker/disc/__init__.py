"""discmaker.disc."""

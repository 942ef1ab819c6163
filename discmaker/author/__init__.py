"""discmaker.author."""

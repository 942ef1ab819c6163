"""discmaker: tamper-evident patient discs of DICOM studies, and the checker for them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("discmaker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

APP_NAME = "discmaker"

__all__ = ["APP_NAME", "__version__"]

"""What discmaker writes into every image it watermarks, read back by the checker.

One copy of the private-block constants both sides rely on (PS3.5 7.8: a private creator in an
odd group reserves a block of 256 elements).
"""

from __future__ import annotations

PRIVATE_GROUP = 0x0009
"""The odd group holding discmaker's private block."""

PRIVATE_CREATOR = "DISCMAKER 1"
"""Private Creator value that reserves the block."""

WATERMARK_FORMAT = "DMWM2"
"""Element 0x01 of the block: the watermark format the pixels carry."""

__all__ = ["PRIVATE_CREATOR", "PRIVATE_GROUP", "WATERMARK_FORMAT"]

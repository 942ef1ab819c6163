"""What discmaker writes into every image it watermarks, read back by the checker.

One copy of the private-block constants both sides rely on (PS3.5 7.8: a private creator in an
odd group reserves a block of 256 elements).
"""

from __future__ import annotations

PRIVATE_GROUP = 0x0009
"""The odd group holding discmaker's private block."""

PRIVATE_CREATOR = "DISCMAKER 1"
"""Private Creator value that reserves the block."""

WATERMARK_FORMAT = "DMWM4"
"""Element 0x01 of the block: the watermark format the pixels carry."""

IMPLEMENTATION_CLASS_UID = "2.25.187214599812766014245452395812463924519"
"""discmaker's Implementation Class UID (a 2.25 UUID-derived root), in every file's meta.

The checker reads it as evidence: an image that still says discmaker wrote it, on a disc
without discmaker's signature, lost that signature (discmaker never writes an unsigned disc).
"""

__all__ = ["IMPLEMENTATION_CLASS_UID", "PRIVATE_CREATOR", "PRIVATE_GROUP", "WATERMARK_FORMAT"]

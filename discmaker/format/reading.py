"""Reading received DICOM data with the work bounded before anything is trusted.

pydicom reads whatever a file declares: a Deflated Explicit VR Little Endian body is inflated
whole (0.5 MB of deflate can declare 512 MiB), and a data set with 250,000 sequence items
becomes 250,000 Python datasets before anyone can count them. Two tools here let a caller set
the bounds first:

* :func:`read_dicom` is ``dcmread`` for one received file, except that a deflated body is
  inflated with :func:`inflate`, at most ``max_inflated`` bytes, and only then handed to
  pydicom. Past the cap it raises :class:`~discmaker.errors.DiscError` naming the cause.
* :class:`ElementWalker` walks the raw elements and sequence items of a data set without
  decoding them (explicit or implicit VR, either byte order), checking every declared length
  against the bytes present, the nesting depth against :data:`MAX_NESTING` and the number of
  elements visited against its budget. :func:`open_body` finds where the data set starts (and
  inflates it, bounded, when it is deflated). :mod:`discmaker.format.dicomdir` counts and
  reads the DICOMDIR's records with them, one record at a time.

Everything malformed is :class:`~discmaker.errors.DiscError`; nothing here prints or warns
except pydicom itself while it reads the file meta.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from discmaker.errors import DiscError

#: Most bytes a received deflated data set (PS3.5 A.5) may inflate to. Deflate is meant for
#: reports and other small objects, discmaker never writes it, and no deflated image on a
#: patient disc comes near this; on zeros deflate reaches about 1,000:1, so a half-megabyte
#: file could otherwise claim 512 MiB. An eighth of the checker's 1 GiB image bound, because
#: the inflated body is held twice while pydicom reads it (the body, then its values).
MAX_INFLATED_BYTES = 128 << 20

#: Sequences nested deeper than this inside one data set are refused. The deepest structures
#: a disc carries (an SR content tree in a DICOMDIR record, an icon image) nest a few levels;
#: the bound only keeps the walk (which recurses once per level) from being steered.
MAX_NESTING = 16

_INFLATE_CHUNK = 1 << 20  # inflate in 1 MiB steps, so a bomb never holds more than the cap

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF

_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_KNOWN_VRS = frozenset(str(vr) for vr in STANDARD_VR)


def inflate(data: bytes | memoryview, *, limit: int, what: str) -> bytes:
    """``data`` (a raw deflate stream, as PS3.5 A.5 stores it) inflated, at most ``limit`` bytes.

    :class:`DiscError` when it would inflate to more, or is corrupt or truncated. The output
    grows a chunk at a time, so refusing a bomb costs at most ``limit`` bytes of memory.
    """
    engine = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending: bytes | memoryview = data
    try:
        while True:
            room = limit + 1 - len(out)
            chunk = engine.decompress(pending, min(_INFLATE_CHUNK, room))
            out += chunk
            if len(out) > limit:
                raise DiscError(
                    f"{what} is deflated and inflates to more than {limit:,} bytes "
                    "(a decompression bomb, or no data set a disc carries)"
                )
            pending = engine.unconsumed_tail
            if engine.eof or (not pending and not chunk):
                break
    except zlib.error as exc:
        raise DiscError(f"{what} is deflated but its deflate stream is corrupt ({exc})") from exc
    if not engine.eof:
        raise DiscError(f"{what} is deflated but its deflate stream is truncated")
    return bytes(out)


def read_dicom(
    data: bytes,
    *,
    max_inflated: int = MAX_INFLATED_BYTES,
    stop_before_pixels: bool = False,
    force: bool = False,
    deflated: bool | None = None,
) -> FileDataset:
    """``dcmread`` of ``data``, with a deflated body inflated to at most ``max_inflated`` bytes.

    Any other transfer syntax is read by pydicom exactly as ``dcmread`` reads it. The deflated
    one gets the same file meta, preamble and encoding pydicom would give it; only the
    inflation is bounded (:class:`DiscError` past ``max_inflated``, or when the stream is
    corrupt). pydicom's own exceptions propagate as they would from ``dcmread``.

    ``deflated``: what :func:`check_structure` found in the file meta of these same bytes.
    False spares reading the file meta once more to tell (a fifth of the time for a CT
    slice); the result is the same, since both read it as pydicom reads it.
    """
    if deflated is False:
        return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=force)
    fp = io.BytesIO(data)
    preamble = read_preamble(fp, force)
    file_meta = _read_file_meta_info(fp)
    if file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=force)
    body = inflate(memoryview(data)[fp.tell() :], limit=max_inflated, what="the file")
    buffer = DicomBytesIO(body)
    dataset = read_dataset(
        cast("BinaryIO", buffer),
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data if stop_before_pixels else None,
    )
    ds = FileDataset(buffer, dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


# -- the raw data set: where it starts, and a bounded walk over its elements ------------------


@dataclass(frozen=True)
class Body:
    """Where a file's data set is, and how it is encoded (the file meta already read)."""

    file_meta: FileMetaDataset
    data: bytes  # the bytes holding the data set: the file itself, or its inflated body
    start: int  # the data set's first byte in ``data``
    implicit_vr: bool
    little_endian: bool


def open_body(data: bytes, *, max_inflated: int, what: str) -> Body:
    """Read the preamble and file meta of ``data`` (leniently, as ``dcmread(force=True)``
    does) and locate its data set, inflated (at most ``max_inflated`` bytes) if deflated.

    The transfer syntax is decided as pydicom decides it; :class:`DiscError` if the
    deflated body is too large or corrupt.
    """
    fp = io.BytesIO(data)
    read_preamble(fp, True)
    file_meta = _read_file_meta_info(fp)
    start = fp.tell()
    syntax = file_meta.get("TransferSyntaxUID")
    implicit, little = True, True
    if start >= len(data):
        pass
    elif syntax is None:  # guess from the first element, as pydicom does
        group, vr = struct.unpack_from("<H2x2s", data.ljust(start + 6, b"\0"), start)
        if vr.decode("latin-1") in _KNOWN_VRS:
            implicit = False
            little = group < 1024
    elif syntax == ImplicitVRLittleEndian:
        pass
    elif syntax == ExplicitVRBigEndian:
        implicit, little = False, False
    elif syntax == DeflatedExplicitVRLittleEndian:
        data = inflate(memoryview(data)[start:], limit=max_inflated, what=what)
        start, implicit = 0, False
    elif syntax in PrivateTransferSyntaxes:
        known = PrivateTransferSyntaxes[PrivateTransferSyntaxes.index(syntax)]
        implicit, little = bool(known.is_implicit_VR), bool(known.is_little_endian)
    else:
        implicit = False
    if start + 6 <= len(data):  # the first element decides, as in pydicom (with a warning)
        first = data[start + 4 : start + 6]
        implicit = not (0x40 < first[0] < 0x5B and 0x40 < first[1] < 0x5B)
    return Body(file_meta, data, start, implicit, little)


@dataclass(frozen=True, slots=True)
class RawElement:
    """One element as encoded: where its value is, and how long it says it is."""

    tag: int
    vr: str | None  # as encoded; None in implicit VR (the data dictionary decides)
    value: int  # offset of the value in the walker's data
    length: int  # the declared length; UNDEFINED for an undefined length
    end: int  # offset just past the element (past its delimiter, for an undefined length)
    implicit: bool

    def raw(self, data: bytes) -> bytes:
        """The value bytes (for a defined length)."""
        return data[self.value : self.value + self.length]


class ElementWalker:
    """Walk the raw elements of a data set in ``data`` without decoding them.

    Every declared length is checked against the bytes present, sequences may nest at most
    :data:`MAX_NESTING` deep, and at most ``max_elements`` elements and items are visited
    over the walker's life; any breach is :class:`DiscError` saying what was refused.
    """

    def __init__(self, data: bytes, *, little_endian: bool, max_elements: int, what: str) -> None:
        self.data = data
        self.little_endian = little_endian
        self._e = "<" if little_endian else ">"
        self._hdr = struct.Struct(self._e + "HHI")  # tag and 4-byte length (implicit, items)
        self._explicit = struct.Struct(self._e + "HH2sH")
        self._long = struct.Struct(self._e + "I")
        self._budget = max_elements
        self._what = what
        self.visited = 0

    def _count(self) -> None:
        self.visited += 1
        if self.visited > self._budget:
            raise DiscError(
                f"{self._what} holds more than {self._budget:,} elements and items, "
                "more than any disc needs"
            )

    def _bad(self, pos: int, problem: str) -> DiscError:
        return DiscError(f"{self._what} is malformed at byte {pos:,}: {problem}")

    def first_is_implicit(self, start: int, end: int, *, implicit: bool) -> bool:
        """Whether the data set at ``start`` is implicit VR (an item of an explicit VR data
        set may be implicit, never the reverse: pydicom's rule)."""
        if implicit or start + 6 > end:
            return implicit
        vr = self.data[start + 4 : start + 6]
        return not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)

    def header(self, pos: int, limit: int, *, implicit: bool) -> tuple[int, str | None, int, int]:
        """(tag, VR or None, declared length, value offset) of the element at ``pos``."""
        data = self.data
        if pos + 8 > limit:
            raise self._bad(pos, "an element header runs past the end")
        if implicit:
            group, elem, length = self._hdr.unpack_from(data, pos)
            return (group << 16) | elem, None, length, pos + 8
        group, elem, raw_vr, short = self._explicit.unpack_from(data, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE:  # items and delimiters carry no VR
            (length,) = self._long.unpack_from(data, pos + 4)
            return tag, None, length, pos + 8
        if not (b"AA" <= raw_vr <= b"ZZ"):  # no VR here: an implicit element (pydicom's rule)
            group, elem, length = self._hdr.unpack_from(data, pos)
            return tag, None, length, pos + 8
        vr = raw_vr.decode("latin-1")
        if vr in _LONG_VRS:
            if pos + 12 > limit:
                raise self._bad(pos, "an element header runs past the end")
            (length,) = self._long.unpack_from(data, pos + 8)
            return tag, vr, length, pos + 12
        return tag, vr, short, pos + 8

    def elements(self, start: int, end: int, *, implicit: bool, depth: int) -> Iterator[RawElement]:
        """The elements of the data set in ``[start, end)``; an item delimiter ends it early.

        Trailing bytes too few for an element header are ignored, as pydicom ignores them.
        """
        if depth > MAX_NESTING:
            raise DiscError(f"{self._what} nests sequences deeper than {MAX_NESTING}")
        pos = start
        while end - pos >= 8:
            self._count()
            tag, vr, length, value = self.header(pos, end, implicit=implicit)
            if tag == ITEM_END:
                return
            if tag in (ITEM, SEQUENCE_END):
                raise self._bad(pos, "a sequence item outside a sequence")
            if length == UNDEFINED:
                stop = self._undefined_end(tag, vr, value, end, implicit=implicit, depth=depth)
            else:
                stop = value + length
                if stop > end == len(self.data):
                    stop = (
                        end  # the data ends inside the value: read what is there, as pydicom does
                    )
                elif stop > end:
                    raise self._bad(
                        pos,
                        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares "
                        f"{length:,} bytes, more than remain",
                    )
            as_implicit = implicit or vr is None or (vr == "UN" and length == UNDEFINED)
            yield RawElement(tag, vr, value, length, stop, as_implicit)
            pos = stop

    def items(
        self, element: RawElement, limit: int, *, depth: int
    ) -> Generator[tuple[int, int, int, bool], None, int]:
        """(item offset, content start, content end, implicit) of each item of a sequence
        (or each fragment of encapsulated data); returns the offset just past the sequence.

        For an undefined-length item the content end is its delimiter's offset.
        """
        if depth > MAX_NESTING:
            raise DiscError(f"{self._what} nests sequences deeper than {MAX_NESTING}")
        undefined = element.length == UNDEFINED
        end = limit if undefined else element.value + element.length
        pos = element.value
        while pos < end:
            self._count()
            tag, _, length, content = self.header(pos, end, implicit=True)
            if tag == SEQUENCE_END:
                if undefined:
                    return content
                raise self._bad(pos, "a sequence delimiter in a sequence of defined length")
            if tag != ITEM:
                raise self._bad(pos, "a sequence holds something other than items")
            implicit = self.first_is_implicit(content, end, implicit=element.implicit)
            if length == UNDEFINED:
                stop = self._item_end(content, end, implicit=implicit, depth=depth + 1)
                yield pos, content, stop, implicit
                pos = stop + 8
            else:
                stop = content + length
                if stop > end == len(self.data):
                    stop = end  # the data ends inside the item: read what is there, as pydicom does
                elif stop > end:
                    raise self._bad(pos, f"an item declares {length:,} bytes, more than remain")
                yield pos, content, stop, implicit
                pos = stop
        if undefined:
            raise self._bad(pos, "a sequence of undefined length has no delimiter")
        return pos

    def _item_end(self, start: int, limit: int, *, implicit: bool, depth: int) -> int:
        """Offset of the delimiter closing the undefined-length item whose content is at start."""
        pos = start
        for element in self.elements(start, limit, implicit=implicit, depth=depth):
            pos = element.end
        if limit - pos < 8 or self._hdr.unpack_from(self.data, pos)[:2] != (0xFFFE, 0xE00D):
            raise self._bad(pos, "an item of undefined length has no delimiter")
        return pos

    def _undefined_end(
        self, tag: int, vr: str | None, value: int, limit: int, *, implicit: bool, depth: int
    ) -> int:
        """Offset past an undefined-length element: a sequence, or encapsulated data, whose
        fragments are items of defined length too; either way a sequence delimiter ends it."""
        element = RawElement(tag, vr, value, UNDEFINED, limit, implicit or vr in (None, "UN"))
        walk = self.items(element, limit, depth=depth + 1)
        while True:
            try:
                next(walk)
            except StopIteration as done:
                end: int = done.value
                return end


#: Elements and items one received image may hold (checked before pydicom parses it). An
#: enhanced multi-frame image of 4,000 frames, each with its functional groups, stays well
#: below; 100,000 empty sequence items took pydicom 9.5 s and 150 MB.
MAX_IMAGE_ELEMENTS = 200_000


@dataclass(frozen=True)
class Structure:
    """What :func:`check_structure` found."""

    problem: str | None  # why the data set must not be trusted; None: it may be read
    deflated: bool = False  # the file meta names Deflated Explicit VR Little Endian


def structure_problem(data: bytes, *, max_inflated: int, what: str) -> str | None:
    """Why the data set of ``data`` must not be trusted as one reading of it, or None
    (:func:`check_structure`)."""
    return check_structure(data, max_inflated=max_inflated, what=what).problem


def check_structure(data: bytes, *, max_inflated: int, what: str) -> Structure:
    """Whether the data set of ``data`` may be trusted as one reading of it, and whether its
    file meta names the deflated transfer syntax (for :func:`read_dicom`).

    Refused: an element repeated or out of ascending tag order at any level (PS3.5 7.1: a
    reader keeps the first copy or the last, so two programs would show different values
    for the same file), more than :data:`MAX_IMAGE_ELEMENTS` elements and items, sequences
    nested deeper than :data:`MAX_NESTING`, and lengths that run past the data.
    """
    try:
        try:
            body = open_body(data, max_inflated=max_inflated, what=what)
        except DiscError:
            raise
        except Exception as exc:  # pydicom on hostile file meta (an unknown VR, a bad length)
            return Structure(f"its file meta cannot be read ({type(exc).__name__}: {exc})"[:300])
        walker = ElementWalker(
            body.data,
            little_endian=body.little_endian,
            max_elements=MAX_IMAGE_ELEMENTS,
            what=what,
        )
        problem = _order_problem(
            walker, body.start, len(body.data), implicit=body.implicit_vr, depth=0
        )
    except DiscError as exc:
        return Structure(str(exc))
    syntax = body.file_meta.get("TransferSyntaxUID")
    return Structure(problem, deflated=syntax == DeflatedExplicitVRLittleEndian)


def _order_problem(
    walker: ElementWalker, start: int, end: int, *, implicit: bool, depth: int
) -> str | None:
    last = -1
    for element in walker.elements(start, end, implicit=implicit, depth=depth):
        if element.tag <= last:
            return (
                f"element ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) comes after "
                f"({last >> 16:04X},{last & 0xFFFF:04X}): elements are repeated or out of "
                "order, so other programs may show other values than the ones checked"
            )
        last = element.tag
        if element.tag >> 16 == 0x7FE0 or not _is_sequence(element):
            continue
        walk = walker.items(element, element.end, depth=depth + 1)
        for _, content, stop, item_implicit in walk:
            found = _order_problem(walker, content, stop, implicit=item_implicit, depth=depth + 1)
            if found is not None:
                return found
    return None


def _is_sequence(element: RawElement) -> bool:
    if element.vr == "UN" and element.length == UNDEFINED:
        return True  # read as an implicit VR sequence, as pydicom reads it
    if element.vr is not None:
        return element.vr == "SQ"
    try:
        return bool(dictionary_VR(element.tag) == "SQ")
    except KeyError:
        return element.length == UNDEFINED  # an unknown element of undefined length


__all__ = [
    "ITEM",
    "ITEM_END",
    "MAX_IMAGE_ELEMENTS",
    "MAX_INFLATED_BYTES",
    "MAX_NESTING",
    "SEQUENCE_END",
    "UNDEFINED",
    "Body",
    "ElementWalker",
    "RawElement",
    "Structure",
    "check_structure",
    "inflate",
    "open_body",
    "read_dicom",
    "structure_problem",
]

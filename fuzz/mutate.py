"""Structure-aware mutations of a genuine disc. Every case copies the genuine disc first.

``make_case(fixture, seed, index, work)`` is deterministic in ``(seed, index)``: the same pair
always builds the same hostile disc, so a finding is reproduced by its seed and index alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from fuzz.fixture import Fixture

CLASSES = ("image-attr", "image-bytes", "dicomdir", "manifest", "iso", "iso-content", "layout")
WEIGHTS = (26, 12, 12, 16, 10, 12, 12)
MAX_PAD = 100 * 1024 * 1024  # disk-use cap per case
SECTOR = 2048
MANIFEST = "DISCSIG/MANIFEST.JSN"
SIGNATURE = "DISCSIG/MANIFEST.SIG"
SIGNER = "DISCSIG/SIGNER.PEM"


@dataclass(frozen=True)
class Case:
    cls: str
    seed: int
    index: int
    description: str
    target: Path  # what to give ``discmaker check``
    workdir: Path  # delete after the run


class _Ctx:
    def __init__(self, rng: random.Random, fx: Fixture, disc: Path, fast: bool) -> None:
        self.rng = rng
        self.fx = fx
        self.disc = disc
        self.fast = fast  # in-process variant: nothing meant to hang or to be huge
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def images(self) -> list[Path]:
        return sorted(p for p in self.disc.glob("PT*/ST*/SE*/IM*") if p.is_file())

    def files(self) -> list[Path]:
        return sorted(p for p in self.disc.rglob("*") if p.is_file() and not p.is_symlink())

    def seed_tag(self) -> str:
        return f"{self.rng.getrandbits(32):08x}"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.disc).as_posix()


def make_case(fx: Fixture, seed: int, index: int, work: Path, *, fast: bool = False) -> Case:
    rng = random.Random(f"discmaker-fuzz/{seed}/{index}")
    cls = rng.choices(CLASSES, WEIGHTS)[0]
    workdir = work / f"case-{seed}-{index:05d}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    if cls in ("iso", "iso-content"):
        target = workdir / "disc.iso"
        shutil.copyfile(fx.iso, target)
    else:
        target = workdir / "disc"
        shutil.copytree(fx.folder, target, symlinks=True)
    ctx = _Ctx(rng, fx, target, fast)
    _MUTATORS[cls](ctx)
    genuine = fx.iso if cls in ("iso", "iso-content") else fx.folder
    if _digest(target) == _digest(genuine):
        ctx.note("(no byte changed)")
    return Case(cls, seed, index, "; ".join(ctx.notes), target, workdir)


def _digest(root: Path) -> str:
    """A cheap fingerprint of a file or tree (names, kinds, contents of small files)."""
    h = hashlib.sha256()
    paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
    for p in paths:
        h.update(os.fsencode(p.relative_to(root).as_posix() if p != root else ""))
        if p.is_symlink():
            h.update(b"L" + os.fsencode(os.readlink(p)))
        elif p.is_file():
            st = p.stat()
            h.update(b"F%d" % st.st_size)
            if st.st_size < 4 << 20:
                h.update(p.read_bytes())
        else:
            h.update(b"D" if p.is_dir() else b"O")
    return h.hexdigest()


# --------------------------------------------------------------------------- helpers


def _flip(rng: random.Random, data: bytearray, lo: int, hi: int, count: int) -> list[int]:
    hi = min(hi, len(data))
    if hi <= lo:
        return []
    where = sorted(rng.randrange(lo, hi) for _ in range(count))
    for pos in where:
        data[pos] ^= rng.randrange(1, 256)
    return where


def _raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put ``value`` into ``ds`` byte for byte (any length, any VR): pydicom writes it as is."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _read_ds(path: Path) -> Dataset:
    return pydicom.dcmread(path, force=True)


def _save_ds(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=False)


# --------------------------------------------------------------------------- (a) image header

_US_ATTRS = {
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101,
    "HighBit": 0x00280102,
    "SamplesPerPixel": 0x00280002,
    "PixelRepresentation": 0x00280103,
    "PlanarConfiguration": 0x00280006,
    "PixelPaddingValue": 0x00280120,
}
_US_PLAUSIBLE = {
    "Rows": [0, 1, 2, 255, 4096, 65535],
    "Columns": [0, 1, 3, 4096, 65535],
    "BitsAllocated": [0, 1, 7, 8, 12, 24, 32, 64, 65535],
    "BitsStored": [0, 1, 8, 15, 17, 32, 255, 65535],
    "HighBit": [0, 7, 15, 16, 31, 100, 65535],
    "SamplesPerPixel": [0, 2, 3, 4, 65535],
    "PixelRepresentation": [1, 2, 65535],
    "PlanarConfiguration": [0, 1, 2, 65535],
    "PixelPaddingValue": [0, 1, 32768, 65535],
}
_US_RAW: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("zero", b"\x00\x00"),
    ("huge 65535", b"\xff\xff"),
    ("0x8000", b"\x00\x80"),
    ("multi-valued 1\\2", b"\x01\x00\x02\x00"),
    ("multi-valued x2000", b"\x01\x00\x02\x00" * 1000),
    ("odd length 1", b"\x01"),
    ("odd length 3", b"\x01\x00\x00"),
    ("4 bytes 0xffffffff", b"\xff\xff\xff\xff"),
    ("text 'abcd'", b"abcd"),
    ("text '-1'", b"-1"),
]
_IS_VALUES = [
    "",
    "0",
    "-1",
    "2",
    "3",
    "1000000000",
    "99999999999",
    "abc",
    "1\\2",
    "1.5",
    " 3",
    "+1",
]
_CS_VALUES = [
    "",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "PALETTE COLOR",
    "MONOCHROME1",
    "BOGUS",
    "MONOCHROME2\\RGB",
    "X" * 1000,
]
_TS_VALUES = [
    "",
    "garbage",
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit big endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.4.50",  # JPEG baseline, but the pixel data stays native
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.4.100",  # MPEG2
    "1.2.840.10008.1.2\\1.2.840.10008.1.2.1",
    "9" * 64,
    "1." * 200,
]


def _wrong_vr_element(rng: random.Random, tag: int) -> tuple[str, DataElement]:
    kind = rng.randrange(6)
    if kind == 0:
        return "wrong VR LO '-1'", DataElement(tag, "LO", "-1")
    if kind == 1:
        return "wrong VR DS '1e9'", DataElement(tag, "DS", "1e9")
    if kind == 2:
        return "wrong VR FD 3.5", DataElement(tag, "FD", 3.5)
    if kind == 3:
        return "wrong VR SQ (one empty item)", DataElement(tag, "SQ", Sequence([Dataset()]))
    if kind == 4:
        return "wrong VR SS -1", DataElement(tag, "SS", -1)
    return "wrong VR UL 2**32-1", DataElement(tag, "UL", 0xFFFFFFFF)


def _mutate_us(ctx: _Ctx, ds: Dataset, name: str) -> str:
    tag = _US_ATTRS[name]
    r = ctx.rng.random()
    if r < 0.1 and tag in ds:
        del ds[tag]
        return f"{name} removed"
    if r < 0.45:
        label, raw = ctx.rng.choice(_US_RAW)
        vr = ctx.rng.choice(["UN", "US"])
        _raw(ds, tag, vr, raw)
        return f"{name} raw {vr} {label}"
    if r < 0.75:
        value = ctx.rng.choice(_US_PLAUSIBLE[name])
        ds[tag] = DataElement(tag, "US", value)
        return f"{name}={value}"
    label, elem = _wrong_vr_element(ctx.rng, tag)
    ds[tag] = elem
    return f"{name} {label}"


def _set_transfer_syntax_bytes(data: bytes, uid: str) -> bytes:
    """Rewrite (0002,0010) in the raw file and fix the group length; no pydicom involved."""
    if data[128:132] != b"DICM":
        return data
    pos = data.find(b"\x02\x00\x10\x00UI", 132)
    if pos < 0:
        return data
    (old_len,) = struct.unpack_from("<H", data, pos + 6)
    value = uid.encode("latin-1", "replace")
    if len(value) % 2:
        value += b"\x00"
    value = value[:65534]
    new = data[: pos + 6] + struct.pack("<H", len(value)) + value + data[pos + 8 + old_len :]
    if new[132:136] == b"\x02\x00\x00\x00" and new[136:138] == b"UL":
        (group_len,) = struct.unpack_from("<I", new, 140)
        group_len += len(value) - old_len
        new = new[:140] + struct.pack("<I", group_len & 0xFFFFFFFF) + new[144:]
    return new


def _mutate_pixel_data(ctx: _Ctx, ds: Dataset) -> str:
    tag = Tag(0x7FE0, 0x0010)
    if tag not in ds:
        return "no Pixel Data to change"
    if not isinstance(ds[tag].value, bytes | bytearray):  # an earlier mutation replaced it
        return "Pixel Data already replaced by another mutation"
    data = bytes(ds[tag].value)
    if not data:
        return "Pixel Data already empty"
    kind = ctx.rng.randrange(9)
    if kind == 0:
        ds[tag] = DataElement(tag, "OW", b"")
        return "Pixel Data zero-length"
    if kind == 1:
        cut = ctx.rng.randrange(0, len(data)) & ~1
        ds[tag] = DataElement(tag, "OW", data[:cut])
        return f"Pixel Data truncated to {cut} of {len(data)} bytes"
    if kind == 2:
        ds[tag] = DataElement(tag, "OB", data[:-1])
        return "Pixel Data odd length (OB, one byte short)"
    if kind == 3:
        ds[tag] = DataElement(tag, "OW", data * 2)
        return "Pixel Data doubled"
    if kind == 4:
        ds[tag] = DataElement(tag, "OB", data)
        return "Pixel Data VR OW->OB"
    if kind == 5:
        del ds[tag]
        return "Pixel Data removed"
    if kind == 6:
        size = 1 if ctx.fast else ctx.rng.choice([8, 40]) * 1024 * 1024
        ds[tag] = DataElement(tag, "OW", data + bytes(size - size % 2))
        return f"Pixel Data extended by {size} zero bytes"
    if kind == 7:
        # an encapsulated-looking value: basic offset table item, one garbage fragment
        frag = bytes(ctx.rng.randrange(256) for _ in range(64))
        enc = (
            b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0" + struct.pack("<I", 64) + frag
        )
        ds[tag] = DataElement(tag, "OB", enc)
        return "Pixel Data replaced by encapsulated-looking fragments (native TS)"
    ds[tag] = DataElement(tag, "SQ", Sequence([Dataset()]))
    return "Pixel Data as SQ"


def _mutate_private(ctx: _Ctx, ds: Dataset) -> str:
    creator = Tag(0x0009, 0x0010)
    kind = ctx.rng.randrange(9)
    if kind == 0:
        if creator in ds:
            del ds[creator]
        return "private creator (0009,0010) removed"
    if kind == 1:
        value = ctx.rng.choice(
            ["", "DISCMAKER 2", "discmaker 1", "DISCMAKER 1\\DISCMAKER 1", "X" * 300]
        )
        ds[creator] = DataElement(creator, "LO", value)
        return f"private creator (0009,0010) = {value[:30]!r}"
    if kind == 2:
        _raw(ds, creator, "UN", bytes(ctx.rng.randrange(256) for _ in range(12)))
        return "private creator (0009,0010) raw random bytes"
    if kind == 3:
        ds[Tag(0x0009, 0x0011)] = DataElement(Tag(0x0009, 0x0011), "LO", "DISCMAKER 1")
        return "second private creator DISCMAKER 1 at (0009,0011)"
    if kind == 4:
        ds[creator] = DataElement(creator, "SQ", Sequence([Dataset()]))
        return "private creator (0009,0010) as SQ"
    tag = Tag(0x0009, ctx.rng.choice([0x1001, 0x1002]))
    if kind == 5 and tag in ds:
        del ds[tag]
        return f"private element {tag} removed"
    value = ctx.rng.choice(
        ["", "DMWM9", "ZZZZ", "131C208D3B14AEF9\\00", "G" * 16, "0" * 4000, "DMWM2"]
    )
    vr = ctx.rng.choice(["UN", "CS", "LO"])
    _raw(ds, tag, vr, value.encode())
    return f"private element {tag} raw {vr} {value[:24]!r}"


_ATTR_NAMES = [*_US_ATTRS, "NumberOfFrames", "PhotometricInterpretation", "TransferSyntaxUID"]


def _mutate_image_attr(ctx: _Ctx) -> None:
    images = ctx.images()
    chosen = images if ctx.rng.random() < 0.15 else [ctx.rng.choice(images)]
    plan: list[str] = []
    for _ in range(ctx.rng.choice([1, 1, 1, 2, 3])):
        r = ctx.rng.random()
        plan.append(
            ctx.rng.choice(_ATTR_NAMES) if r < 0.7 else ("pixel" if r < 0.88 else "private")
        )
    for path in chosen:
        ds = _read_ds(path)
        ts_value: str | None = None
        done: list[str] = []
        for step in plan:
            if step in _US_ATTRS:
                done.append(_mutate_us(ctx, ds, step))
            elif step == "NumberOfFrames":
                tag = 0x00280008
                value = ctx.rng.choice(_IS_VALUES)
                vr = ctx.rng.choice(["UN", "IS"])
                _raw(ds, tag, vr, value.encode())
                done.append(f"NumberOfFrames {vr} {value!r}")
            elif step == "PhotometricInterpretation":
                tag = 0x00280004
                value = ctx.rng.choice(_CS_VALUES)
                vr = ctx.rng.choice(["UN", "CS"])
                _raw(ds, tag, vr, value.encode())
                done.append(f"PhotometricInterpretation {vr} {value[:20]!r}")
            elif step == "TransferSyntaxUID":
                ts_value = ctx.rng.choice(_TS_VALUES)
                done.append(f"TransferSyntaxUID {ts_value[:40]!r}")
            elif step == "pixel":
                done.append(_mutate_pixel_data(ctx, ds))
            else:
                done.append(_mutate_private(ctx, ds))
        try:
            _save_ds(ds, path)
        except Exception as exc:  # pydicom refused: fall back to byte flips in the header
            data = bytearray(path.read_bytes())
            _flip(ctx.rng, data, 132, 1200, 4)
            path.write_bytes(bytes(data))
            done.append(f"(pydicom could not write: {type(exc).__name__}; header flips instead)")
        if ts_value is not None:
            path.write_bytes(_set_transfer_syntax_bytes(path.read_bytes(), ts_value))
        ctx.note(f"{ctx.rel(path)}: " + ", ".join(done))


# --------------------------------------------------------------------------- (b) image bytes


def _mutate_image_bytes(ctx: _Ctx) -> None:
    path = ctx.rng.choice(ctx.images())
    data = bytearray(path.read_bytes())
    kind = ctx.rng.randrange(8)
    rel = ctx.rel(path)
    if kind == 0:
        where = _flip(ctx.rng, data, 0, len(data), ctx.rng.choice([1, 2, 8, 64]))
        ctx.note(f"{rel}: {len(where)} random byte flips at {where[:8]}")
    elif kind == 1:
        where = _flip(ctx.rng, data, 128, 1400, ctx.rng.choice([1, 2, 4, 16]))
        ctx.note(f"{rel}: {len(where)} byte flips in the header at {where[:8]}")
    elif kind == 2:
        cut = ctx.rng.choice([0, 1, 128, 131, 132, 140, ctx.rng.randrange(len(data))])
        del data[cut:]
        ctx.note(f"{rel}: truncated to {cut} bytes")
    elif kind == 3:
        extra = bytes(ctx.rng.randrange(256) for _ in range(ctx.rng.choice([1, 7, 4096])))
        data += extra
        ctx.note(f"{rel}: {len(extra)} random bytes appended")
    elif kind == 4:
        pos = ctx.rng.randrange(132, len(data))
        extra = bytes(ctx.rng.randrange(256) for _ in range(ctx.rng.choice([1, 2, 100])))
        data[pos:pos] = extra
        ctx.note(f"{rel}: {len(extra)} random bytes inserted at {pos}")
    elif kind == 5:
        # a huge element length near the start of the data set
        pos = data.find(b"\x08\x00", 132 + 12)
        pos = pos if pos > 0 else 300
        data[pos + 6 : pos + 8] = b"\xff\xff"
        ctx.note(f"{rel}: element length at {pos} set to 0xffff")
    elif kind == 6:
        # Pixel Data element length set to undefined / huge
        pos = data.rfind(b"\xe0\x7f\x10\x00")
        value = ctx.rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0, 1])
        if pos > 0:
            data[pos + 8 : pos + 12] = struct.pack("<I", value)
        ctx.note(f"{rel}: Pixel Data length field = {value:#x}")
    if kind != 7:
        path.write_bytes(bytes(data))
        return
    size = 2 * 1024 * 1024 if ctx.fast else ctx.rng.choice([16, 64, 99]) * 1024 * 1024
    path.write_bytes(bytes(data))
    with path.open("r+b") as fh:
        fh.truncate(min(size, MAX_PAD))
    ctx.note(f"{rel}: padded with zeros to {size} bytes")


# --------------------------------------------------------------------------- (c) DICOMDIR

_OFFSET_TAGS = {
    "next": 0x00041400,
    "lower": 0x00041420,
}


def _mutate_dicomdir(ctx: _Ctx) -> None:
    path = ctx.disc / "DICOMDIR"
    kind = ctx.rng.randrange(7)
    if kind <= 1:
        data = bytearray(path.read_bytes())
        lo = 0 if kind == 0 else 132
        where = _flip(ctx.rng, data, lo, len(data), ctx.rng.choice([1, 3, 10, 50]))
        path.write_bytes(bytes(data))
        ctx.note(f"DICOMDIR: {len(where)} byte flips at {where[:8]}")
        return
    if kind == 2:
        whole = path.read_bytes()
        cut = ctx.rng.randrange(len(whole))
        path.write_bytes(whole[:cut])
        ctx.note(f"DICOMDIR: truncated to {cut} of {len(whole)} bytes")
        return
    ds = _read_ds(path)
    records = list(ds.get("DirectoryRecordSequence", []))
    offsets = sorted(
        {int(r[t].value or 0) for r in records for t in _OFFSET_TAGS.values() if t in r}
        | {int(ds[0x00041200].value or 0) if 0x00041200 in ds else 0}
    )
    done: list[str] = []
    if kind == 3 and records:
        for _ in range(ctx.rng.choice([1, 2, 5])):
            i = ctx.rng.randrange(len(records))
            which = ctx.rng.choice(list(_OFFSET_TAGS))
            value = ctx.rng.choice(
                [
                    0,
                    1,
                    7,
                    0xFFFFFFFF,
                    0x7FFFFFFF,
                    ctx.rng.choice(offsets),
                    ctx.rng.randrange(1, 5000),
                ]
            )
            records[i][_OFFSET_TAGS[which]] = DataElement(_OFFSET_TAGS[which], "UL", value)
            done.append(f"record {i} {which} offset = {value}")
    elif kind == 4 and records:
        first = 0x00041200
        root_tag = ctx.rng.choice([first, 0x00041202])
        root_value = ctx.rng.choice([0, 1, 0xFFFFFFFF, ctx.rng.choice(offsets)])
        ds[root_tag] = DataElement(root_tag, "UL", root_value)
        done.append(f"root {'first' if root_tag == first else 'last'} record offset = {root_value}")
    elif kind == 5 and records:
        i = ctx.rng.randrange(len(records))
        times = ctx.rng.choice([1, 10, 1000])
        records[i + 1 : i + 1] = [copy.deepcopy(records[i]) for _ in range(times)]
        ds.DirectoryRecordSequence = Sequence(records)
        done.append(
            f"record {i} ({records[i].get('DirectoryRecordType', '?')}) duplicated {times}x"
        )
    elif records:
        i = ctx.rng.randrange(len(records))
        field = ctx.rng.choice(
            ["DirectoryRecordType", "ReferencedFileID", "ReferencedSOPInstanceUIDInFile"]
        )
        text = ctx.rng.choice(
            [
                "",
                "BOGUS",
                "PATIENT",
                "IMAGE",
                "..\\..\\etc\\passwd",
                "PT000000\\ST000000",
                "X" * 500,
            ]
        )
        tag = {"DirectoryRecordType": 0x00041430, "ReferencedFileID": 0x00041500}.get(
            field, 0x00041511
        )
        _raw(records[i], tag, ctx.rng.choice(["UN", "CS"]), text.encode())
        done.append(f"record {i} {field} = {text[:30]!r}")
    if not done:
        done.append("no records")
    try:
        _save_ds(ds, path)
    except Exception as exc:
        done.append(f"(pydicom could not write: {type(exc).__name__})")
    ctx.note("DICOMDIR: " + ", ".join(done))


# --------------------------------------------------------------------------- (d) manifest

_WEIRD: list[Any] = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x",
    [],
    {},
    2**64 + 1,
    10**100,
    float("inf"),
    float("nan"),
    "A" * 100000,
    [1, 2, 3],
    {"path": "x"},
]
_EVIL_PATHS = [
    "../x",
    "../../../../etc/passwd",
    "/etc/passwd",
    "DISCSIG/../../x",
    "PT000000/./ST000000",
    "a\x00b",
    "C:\\Windows\\win.ini",
    "",
    ".",
    "DICOMDIR/",
    "PT000000//ST000000/SE000000/IM000000",
    "\udcff",
    "x" * 5000,
    "pt000000/st000000/se000000/im000000",
]
_DEEP = "__FUZZ_DEEP__"


def _json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _json_paths(v, (*prefix, i))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _show(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def _json_mutation(ctx: _Ctx, doc: Any) -> tuple[Any, str]:
    rng = ctx.rng
    paths = _json_paths(doc)
    kind = rng.randrange(8)
    if kind == 0:
        path = rng.choice(paths[1:])
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
        return doc, f"removed {_show(path)}"
    if kind == 1:
        path = rng.choice(paths)
        value = rng.choice(_WEIRD)
        shown = repr(value)[:30]
        return _set(doc, path, copy.deepcopy(value)), f"{_show(path)} = {shown}"
    if kind == 2:
        lists = [p for p in paths if isinstance(_get(doc, p), list) and _get(doc, p)]
        if lists:
            path = rng.choice(lists)
            lst = _get(doc, path)
            times = rng.choice([2, 100, 5000]) if not ctx.fast else rng.choice([2, 100, 1000])
            item = rng.choice(lst)
            lst.extend(copy.deepcopy(item) for _ in range(times))
            return doc, f"{_show(path)}: an entry duplicated {times}x"
    if kind == 3:
        sizes = [p for p in paths if p and p[-1] in ("size", "frames", "images", "count", "number")]
        if sizes:
            path = rng.choice(sizes)
            value = rng.choice([0, -1, 2**31, 2**63, 2**64 + 1, 10**30, 1e300, "12"])
            return _set(doc, path, value), f"{_show(path)} = {value!r}"
    if kind == 4:
        names = [p for p in paths if p and p[-1] in ("path", "file")]
        if names:
            path = rng.choice(names)
            value = rng.choice(_EVIL_PATHS)
            return _set(doc, path, value), f"{_show(path)} = {value[:40]!r}"
    if kind == 5:
        path = rng.choice(paths)
        return _set(doc, path, _DEEP), f"{_show(path)} = nested list, depth 100000"
    if kind == 6:
        hashes = [p for p in paths if p and p[-1] == "sha256"]
        if hashes:
            path = rng.choice(hashes)
            value = rng.choice(["", "0" * 64, "G" * 64, "0" * 63, "0" * 10000, 5])
            return _set(doc, path, value), f"{_show(path)} = {str(value)[:20]!r}"
    # a genuine entry copied with a different path (an unlisted file claimed)
    files = doc.get("files") if isinstance(doc, dict) else None
    if isinstance(files, list) and files:
        extra = copy.deepcopy(rng.choice(files))
        if isinstance(extra, dict):
            extra["path"] = rng.choice(_EVIL_PATHS)
        files.append(extra)
        return doc, f"files: extra entry with path {str(extra)[:50]!r}"
    return doc, "no-op"


def _raw_manifest(ctx: _Ctx, text: bytes) -> tuple[bytes, str]:
    rng = ctx.rng
    kind = rng.randrange(9)
    if kind == 0:
        cut = rng.randrange(len(text))
        return text[:cut], f"raw: truncated to {cut} bytes"
    if kind == 1:
        return b"", "raw: empty file"
    if kind == 2:
        return b"\xef\xbb\xbf" + text, "raw: UTF-8 BOM prepended"
    if kind == 3:
        pos = rng.randrange(len(text))
        return text[:pos] + b"\xff\xfe" + text[pos:], f"raw: invalid UTF-8 at {pos}"
    if kind == 4:
        return text.replace(b'{"created":', b'{"created":"x","files":[],"created":', 1), (
            "raw: duplicate keys (created, files) at top level"
        )
    if kind == 5:
        value = rng.choice([b"[]", b'"x"', b"null", b"1", b"NaN", b"[" * 100000 + b"]" * 100000])
        return value, f"raw: top level {value[:12]!r}"
    if kind == 6:
        size = 1024 if ctx.fast else 64 * 1024 * 1024 + 1
        return text + b" " * (size - len(text)), f"raw: padded with spaces to {size} bytes"
    if kind == 7:
        return text + b"garbage", "raw: trailing garbage"
    where = _flip(rng, bytearray(text), 0, len(text), 3)
    data = bytearray(text)
    for pos in where:
        data[pos] ^= 0x20
    return bytes(data), f"raw: bytes {where} case-flipped"


def _sign(ctx: _Ctx, mode: str) -> str:
    sigdir = ctx.disc / "DISCSIG"
    data = (sigdir / "MANIFEST.JSN").read_bytes()
    if mode == "original":
        return "signature kept"
    key = ctx.fx.trusted_key if mode == "trusted" else ctx.fx.untrusted_key
    pem = ctx.fx.trusted_cert_pem if mode == "trusted" else ctx.fx.untrusted_cert_pem
    (sigdir / "MANIFEST.SIG").write_bytes(key.sign(data))
    (sigdir / "SIGNER.PEM").write_bytes(pem)
    return f"re-signed by the {mode} key"


def _mutate_signature_files(ctx: _Ctx) -> str:
    rng = ctx.rng
    sigdir = ctx.disc / "DISCSIG"
    sig = sigdir / "MANIFEST.SIG"
    pem = sigdir / "SIGNER.PEM"
    kind = rng.randrange(8)
    if kind == 0:
        sig.write_bytes(b"")
        return "MANIFEST.SIG empty"
    if kind == 1:
        sig.write_bytes(sig.read_bytes()[: rng.randrange(1, 64)])
        return "MANIFEST.SIG truncated"
    if kind == 2:
        sig.write_bytes(sig.read_bytes() * rng.choice([2, 1000]))
        return "MANIFEST.SIG repeated"
    if kind == 3:
        pem.write_bytes(bytes(rng.randrange(256) for _ in range(600)))
        return "SIGNER.PEM random bytes"
    if kind == 4:
        pem.write_bytes(pem.read_bytes() * rng.choice([2, 50]))
        return "SIGNER.PEM several certificates"
    if kind == 5:
        pem.write_bytes(pem.read_bytes().replace(b"CERTIFICATE", b"PUBLIC KEY"))
        return "SIGNER.PEM labelled PUBLIC KEY"
    if kind == 6:
        body = bytearray(pem.read_bytes())
        where = _flip(rng, body, 30, len(body) - 30, 2)
        pem.write_bytes(bytes(body))
        return f"SIGNER.PEM base64 flips at {where}"
    pem.write_bytes(
        b"-----BEGIN CERTIFICATE-----\n" + b"A" * 1_000_000 + b"\n-----END CERTIFICATE-----\n"
    )
    return "SIGNER.PEM 1 MB of base64"


def _mutate_manifest(ctx: _Ctx) -> None:
    path = ctx.disc / MANIFEST
    mode = ctx.rng.choices(["original", "untrusted", "trusted"], [2, 3, 5])[0]
    r = ctx.rng.random()
    if r < 0.12:
        ctx.note(_mutate_signature_files(ctx))
        return
    if r < 0.35:
        data, what = _raw_manifest(ctx, path.read_bytes())
        path.write_bytes(data)
        ctx.note(f"MANIFEST.JSN {what}")
    else:
        doc = json.loads(path.read_bytes())
        whats = []
        for _ in range(ctx.rng.choice([1, 1, 2, 3])):
            doc, what = _json_mutation(ctx, doc)
            whats.append(what)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        deep = "[" * 100000 + "]" * 100000
        text = text.replace(json.dumps(_DEEP), deep)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        ctx.note("MANIFEST.JSN " + ", ".join(whats))
    ctx.note(_sign(ctx, mode))


# --------------------------------------------------------------------------- (e) ISO


def _u32(data: bytes | bytearray, pos: int) -> int:
    return int(struct.unpack_from("<I", data, pos)[0])


def _put_both(data: bytearray, pos: int, value: int, *, consistent: bool = True) -> None:
    """An ISO 9660 both-byte-order 32-bit field at ``pos``."""
    value &= 0xFFFFFFFF
    struct.pack_into("<I", data, pos, value)
    struct.pack_into(">I", data, pos + 4, value if consistent else value ^ 0x01010101)


def _iso_records(data: bytearray, vd: int) -> list[tuple[int, int, int, bool]]:
    """Directory records (file offset, extent, size, is_dir) reachable from descriptor ``vd``."""
    base = vd * SECTOR
    root = base + 156
    out: list[tuple[int, int, int, bool]] = [
        (root, _u32(data, root + 2), _u32(data, root + 10), True)
    ]
    queue = [(_u32(data, root + 2), _u32(data, root + 10))]
    seen: set[int] = set()
    while queue and len(out) < 500:
        extent, size = queue.pop()
        if extent in seen or extent * SECTOR + size > len(data) or size > 1 << 20:
            continue
        seen.add(extent)
        pos, end = extent * SECTOR, extent * SECTOR + size
        while pos < end:
            length = data[pos]
            if length == 0:
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            name_len = data[pos + 32]
            name = bytes(data[pos + 33 : pos + 33 + name_len])
            is_dir = bool(data[pos + 25] & 2)
            ext, sz = _u32(data, pos + 2), _u32(data, pos + 10)
            if name not in (b"\x00", b"\x01"):
                out.append((pos, ext, sz, is_dir))
                if is_dir:
                    queue.append((ext, sz))
            pos += length
    return out


def _mutate_iso(ctx: _Ctx) -> None:
    rng = ctx.rng
    path = ctx.disc
    data = bytearray(path.read_bytes())
    descriptors = [s for s in range(16, 24) if data[s * SECTOR + 1 : s * SECTOR + 6] == b"CD001"]
    primary = [s for s in descriptors if data[s * SECTOR] in (1, 2)]
    kind = rng.randrange(8)
    what: str
    if kind == 0:
        where = _flip(rng, data, 16 * SECTOR, 21 * SECTOR, rng.choice([1, 2, 8, 40]))
        what = f"{len(where)} byte flips in sectors 16..20 at {where[:6]}"
    elif kind == 1:
        vd = rng.choice(primary) * SECTOR
        field, pos = rng.choice(
            [
                ("volume space size", 80),
                ("path table size", 132),
                ("root extent", 158),
                ("root size", 166),
            ]
        )
        value = rng.choice(
            [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(data) // SECTOR + 5, rng.randrange(1 << 20)]
        )
        consistent = rng.random() < 0.7
        _put_both(data, vd + pos, value, consistent=consistent)
        what = f"descriptor {vd // SECTOR} {field} = {value} (byte orders agree: {consistent})"
    elif kind == 2:
        vd = rng.choice(primary) * SECTOR
        value = rng.choice([0, 1, 512, 4096, 65535])
        struct.pack_into("<H", data, vd + 128, value)
        struct.pack_into(">H", data, vd + 130, value)
        what = f"descriptor {vd // SECTOR} logical block size = {value}"
    elif kind == 3:
        vd = rng.choice(primary) * SECTOR
        loc, size = _u32(data, vd + 140), _u32(data, vd + 132)
        if rng.random() < 0.5 and loc * SECTOR < len(data):
            where = _flip(
                rng, data, loc * SECTOR, loc * SECTOR + max(size, 1), rng.choice([1, 4, 16])
            )
            what = f"path table (sector {loc}) flips at {where[:6]}"
        else:
            value = rng.choice([0, 16, 0xFFFFFFFF, rng.randrange(1 << 20)])
            struct.pack_into("<I", data, vd + 140, value)
            what = f"descriptor {vd // SECTOR} L path table location = {value}"
    elif kind in (4, 5):
        vd = rng.choice(primary)
        records = _iso_records(data, vd)
        pos, _ext, _size, is_dir = rng.choice(records[1:] or records)
        parents = [r[1] for r in records if r[3]]
        sub = rng.randrange(6)
        if sub == 0:
            where = _flip(rng, data, pos, pos + max(data[pos], 34), rng.choice([1, 3]))
            what = f"directory record at {pos} flips at {where}"
        elif sub == 1:
            value = rng.choice([*parents, 0, 16, 0xFFFFFFFF, len(data) // SECTOR + 1])
            _put_both(data, pos + 2, value, consistent=rng.random() < 0.8)
            what = f"record at {pos} (dir={is_dir}) extent = {value}"
        elif sub == 2:
            value = rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 30, 3])
            _put_both(data, pos + 10, value, consistent=rng.random() < 0.8)
            what = f"record at {pos} (dir={is_dir}) data length = {value}"
        elif sub == 3:
            value = rng.choice([0, 1, 33, 255])
            data[pos] = value
            what = f"record at {pos} length byte = {value}"
        elif sub == 4:
            data[pos + 25] ^= 2
            what = f"record at {pos} directory flag toggled (was dir={is_dir})"
        else:
            value = rng.choice([0, 200, 255])
            data[pos + 32] = value
            what = f"record at {pos} name length = {value}"
    elif kind == 6:
        cut = rng.choice([0, 16 * SECTOR, 17 * SECTOR + 100, 20 * SECTOR, rng.randrange(len(data))])
        del data[cut:]
        what = f"truncated to {cut} of {len(path.read_bytes())} bytes"
    else:
        where = _flip(rng, data, 18 * SECTOR, len(data), rng.choice([1, 5, 50]))
        what = f"{len(where)} byte flips anywhere past sector 18, first {where[:6]}"
    path.write_bytes(bytes(data))
    ctx.note(f"ISO: {what}")


def _mutate_iso_content(ctx: _Ctx) -> None:
    """A folder mutation (image, DICOMDIR, manifest) patched into the ISO image in place.

    Each changed file is written over its own extent; what does not fit the sectors allocated
    to it is cut, and the file's directory records (ISO 9660 and Joliet) get the new length.
    """
    # The ISO's own files (its manifest also signs the image's layout, so it is not the
    # folder disc's): what the mutation starts from must be found in the image again.
    scratch = ctx.disc.parent / "scratch"
    original = ctx.disc.parent / "original"
    from discmaker.disc.source import open_source  # noqa: PLC0415 (the library may be edited)

    with open_source(ctx.fx.iso) as src:
        for entry in src.files():
            for root in (scratch, original):
                (root / entry.path).parent.mkdir(parents=True, exist_ok=True)
                (root / entry.path).write_bytes(src.read_bytes(entry.path, limit=1 << 30))
    sub = _Ctx(ctx.rng, ctx.fx, scratch, ctx.fast)
    kind = ctx.rng.choice(["image-attr", "image-bytes", "dicomdir", "manifest"])
    _MUTATORS[kind](sub)
    data = bytearray(ctx.disc.read_bytes())
    descriptors = [s for s in range(16, 24) if data[s * SECTOR + 1 : s * SECTOR + 6] == b"CD001"]
    records = [r for s in descriptors if data[s * SECTOR] in (1, 2) for r in _iso_records(data, s)]
    patched: list[str] = []
    for new_path in sorted(p for p in scratch.rglob("*") if p.is_file()):
        rel = new_path.relative_to(scratch)
        old_path = original / rel
        old = old_path.read_bytes() if old_path.is_file() else b""
        new = new_path.read_bytes()
        if new == old:
            continue
        offset = data.find(old) if old else -1  # a file the mutation added has no extent
        if offset < 0 or offset % SECTOR:
            patched.append(f"{rel.as_posix()} not located in the ISO")
            continue
        allocated = -(-len(old) // SECTOR) * SECTOR
        cut = len(new) > allocated
        new = new[:allocated]
        data[offset : offset + allocated] = new + bytes(allocated - len(new))
        for pos, extent, _size, is_dir in records:
            if extent == offset // SECTOR and not is_dir:
                _put_both(data, pos + 10, len(new))
        patched.append(f"{rel.as_posix()} patched ({len(new)} bytes{', cut' if cut else ''})")
    ctx.disc.write_bytes(bytes(data))
    shutil.rmtree(scratch)
    shutil.rmtree(original)
    ctx.note(f"in the ISO, {kind}: " + "; ".join(sub.notes) + " -> " + ", ".join(patched))


# --------------------------------------------------------------------------- (f) folder layout


def _mutate_layout(ctx: _Ctx) -> None:
    rng = ctx.rng
    disc = ctx.disc
    kinds = ["delete", "delete-dir", "add", "symlink", "nest", "odd-name", "file-dir", "many"]
    if not ctx.fast:
        kinds += ["fifo", "device", "big-extra"]
    kind = rng.choice(kinds)
    files = ctx.files()
    if kind == "delete":
        victim = rng.choice(files)
        victim.unlink()
        ctx.note(f"deleted {ctx.rel(victim)}")
    elif kind == "delete-dir":
        victim = rng.choice([disc / "DISCSIG", *{p.parent for p in ctx.images()}])
        shutil.rmtree(victim)
        ctx.note(f"deleted folder {ctx.rel(victim)}")
    elif kind == "add":
        where = rng.choice([disc, disc / "DISCSIG", *{p.parent for p in ctx.images()}])
        name = rng.choice(["EXTRA", "IM999999", "MANIFEST.JSN.BAK", "DICOMDIR.1", "autorun.inf"])
        content = rng.choice(
            [
                b"",
                b"junk",
                ctx.images()[0].read_bytes(),
                bytes(rng.randrange(256) for _ in range(999)),
            ]
        )
        target = where / name
        target.write_bytes(content)
        ctx.note(f"added {ctx.rel(target)} ({len(content)} bytes)")
    elif kind == "symlink":
        victim = rng.choice(files)
        sub = rng.randrange(6)
        outside = ctx.fx.root / "outside-copy"
        if sub == 0:
            outside.mkdir(exist_ok=True)
            copy_ = outside / f"{ctx.rel(victim).replace('/', '_')}-{ctx.seed_tag()}"
            shutil.copyfile(victim, copy_)
            victim.unlink()
            victim.symlink_to(copy_)
            ctx.note(f"{ctx.rel(victim)} replaced by a symlink to an outside copy of itself")
        elif sub == 1:
            victim.unlink()
            victim.symlink_to("/etc/passwd")
            ctx.note(f"{ctx.rel(victim)} -> /etc/passwd")
        elif sub == 2:
            victim.unlink()
            victim.symlink_to(victim.name)
            ctx.note(f"{ctx.rel(victim)} -> itself (loop)")
        elif sub == 3:
            link = victim.parent / "LOOP"
            link.symlink_to("..")
            ctx.note(f"{ctx.rel(link)} -> .. (directory loop)")
        elif sub == 4:
            link = disc / "ROOT"
            link.symlink_to("/")
            ctx.note("ROOT -> / (whole file system)")
        else:
            victim.unlink()
            victim.symlink_to("/nonexistent/target")
            ctx.note(f"{ctx.rel(victim)} -> dangling")
    elif kind == "nest":
        depth = rng.choice([50, 300])
        d = disc / rng.choice(["PT000000/ST000000", "", "DISCSIG"])
        for _ in range(depth):
            d = d / "D"
        os.makedirs(d)
        (d / "IM000000").write_bytes(ctx.images()[0].read_bytes())
        ctx.note(f"folder nesting depth {depth} with an image at the bottom")
    elif kind == "odd-name":
        name = rng.choice(
            [
                "new\nline",
                os.fsdecode(b"bad\xff\xfe"),
                "x" * 255,
                "e\u0301",
                " ",
                "IM000000 ",
                "...",
                "pt000000",
                "a:b",
                "*?",
                "\t",
            ]
        )
        src = rng.choice(files)
        target = src.parent / name
        if name == "pt000000":
            shutil.copytree(disc / "PT000000", disc / name)
        elif rng.random() < 0.5:
            src.rename(target)
        else:
            shutil.copyfile(src, target)
        ctx.note(f"odd name {name[:20]!r} next to / instead of {ctx.rel(src)}")
    elif kind == "file-dir":
        victim = rng.choice([*files, disc / "DISCSIG"])
        rel = ctx.rel(victim)
        if victim.is_dir():
            shutil.rmtree(victim)
            victim.write_bytes(b"not a folder")
            ctx.note(f"folder {rel} replaced by a file")
        else:
            victim.unlink()
            victim.mkdir()
            (victim / "X").write_bytes(b"x")
            ctx.note(f"file {rel} replaced by a folder")
    elif kind == "many":
        n = 200 if ctx.fast else rng.choice([2000, 20000])
        d = disc / "PT000000" / "MANY"
        d.mkdir()
        for i in range(n):
            (d / f"F{i:06d}").write_bytes(b"")
        ctx.note(f"{n} extra empty files in PT000000/MANY")
    elif kind == "fifo":
        victim = rng.choice(files)
        victim.unlink()
        os.mkfifo(victim)
        ctx.note(f"{ctx.rel(victim)} replaced by a FIFO (named pipe)")
    elif kind == "device":
        victim = rng.choice(files)
        dev = rng.choice(["/dev/zero", "/dev/urandom"])
        victim.unlink()
        victim.symlink_to(dev)
        ctx.note(f"{ctx.rel(victim)} -> {dev}")
    else:
        target = disc / "PT000000" / "HUGE.BIN"
        with target.open("wb") as fh:
            fh.truncate(MAX_PAD)
        ctx.note("unlisted sparse 100 MB file PT000000/HUGE.BIN")


_MUTATORS: dict[str, Callable[[_Ctx], None]] = {
    "image-attr": _mutate_image_attr,
    "image-bytes": _mutate_image_bytes,
    "dicomdir": _mutate_dicomdir,
    "manifest": _mutate_manifest,
    "iso": _mutate_iso,
    "iso-content": _mutate_iso_content,
    "layout": _mutate_layout,
}

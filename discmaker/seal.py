"""Frame-level watermark seal: signed block, erasure-coded spread, verification and restore.

Per frame a signed block G (see docs/WATERMARK.md) holding a keyed hash of every grid box's
original raw words is cut into k data shards and extended by a systematic Reed-Solomon code
over GF(256) with parity shards; every carrier region (one per box and sample plane) holds
one shard. Any k intact shards give G back; damage to up to 4 boxes (>= 8 boxes in the frame,
fewer: 2 or 1) leaves G decodable, so the signature verifies and the damage is localised.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pydicom
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from discmaker.pixels import RawFrames, frames_view, pixel_bytes, pixel_format, write_back
from discmaker.watermark import (
    HEADER_BITS,
    Box,
    PixelFormat,
    UnsupportedPixelsError,
    WatermarkCapacityError,
    _to_stored,
    default_grid,
    embed_region,
    extract_region,
    grid_boxes,
    region_capacity,
)

__all__ = [
    "SIGNED_BLOCK_VERSION",
    "SealStats",
    "TamperedRegion",
    "UnsealResult",
    "key_id_for",
    "parity_boxes",
    "rs_decode",
    "rs_encode",
    "seal_dataset",
    "signed_block_size",
    "unseal_dataset",
]

SIGNED_BLOCK_VERSION = 2
_DOMAIN = b"discmaker/watermark/v2\x00"
_HEAD = struct.Struct(">B8s16s")  # version, key id, identity digest
_WHERE = struct.Struct(">IHH")  # frame, grid rows, grid cols: signed, not carried
_SHARD = struct.Struct(">BBH")  # k, shard index, tag (first 2 bytes of BLAKE2b(G))
_HASH = 8
_SIG = 64
_SEARCH_BUDGET = 256  # decode attempts when some CRC-valid shards are inconsistent
_QUICK_SAFETY = 6  # capacity is about 4 x the quick score (one of four sub-grids)

Status = Literal[
    "ok", "tampered", "no-watermark", "unknown-signer", "bad-signature", "identity-mismatch"
]


@dataclass(frozen=True)
class SealStats:
    frames: int
    values_changed: int
    values_total: int
    carriers: int  # carrier regions written, all frames
    signed_block_bytes: int  # size of G per frame


@dataclass(frozen=True)
class TamperedRegion:
    frame: int  # 0-based
    row0: int
    col0: int
    row1: int
    col1: int


@dataclass(frozen=True)
class UnsealResult:
    status: Status
    key_id: bytes | None
    regions: tuple[TamperedRegion, ...]
    reasons: tuple[str, ...]
    restored_pixel_data: bytes | None


def key_id_for(public_key: Ed25519PublicKey) -> bytes:
    """sha256 of the raw public key, first 8 bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


def signed_block_size(nboxes: int) -> int:
    """Bytes of G for a frame of ``nboxes`` boxes (89 + 8 x boxes)."""
    return _HEAD.size + _HASH * nboxes + _SIG


def _tag(block: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(block, digest_size=2, person=b"DMwmtag").digest(), "big")


def parity_boxes(nboxes: int) -> tuple[int, ...]:
    """Damaged boxes the spread tolerates, in order of preference (the seal falls back)."""
    if nboxes >= 8:
        return (4,)
    if nboxes >= 4:
        return (2, 1)
    return (1,)


# ---------------------------------------------------------------------------------------------
# Reed-Solomon erasure code over GF(256) (polynomial 0x11D), systematic: shards 0..k-1 are the
# data, shard k + j is row j of a Cauchy matrix 1 / ((k + j) xor i) times the data. Every
# k x k submatrix of [I; C] is invertible, so any k shards give the data back.


def _gf_tables() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    exp = np.zeros(512, np.int32)
    log = np.zeros(256, np.int32)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    exp[255:510] = exp[:255]
    return exp, log


_EXP, _LOG = _gf_tables()


def _gf_matmul(m: npt.NDArray[np.int32], d: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """(r x k) times (k x L) over GF(256)."""
    prod = _EXP[_LOG[m][:, :, None] + _LOG[d][None, :, :]]
    prod[(m == 0)[:, :, None] | (d == 0)[None, :, :]] = 0
    out: npt.NDArray[np.int32] = np.bitwise_xor.reduce(prod, axis=1)
    return out


def _gf_rows(k: int, idx: list[int]) -> npt.NDArray[np.int32]:
    """Generator rows of the shards ``idx``."""
    m = np.zeros((len(idx), k), np.int32)
    cols = np.arange(k)
    for r, i in enumerate(idx):
        if i < k:
            m[r, i] = 1
        else:
            m[r] = _EXP[255 - _LOG[i ^ cols]]
    return m


def _gf_invert(m: npt.NDArray[np.int32]) -> npt.NDArray[np.int32] | None:
    n = m.shape[0]
    a = np.concatenate([m, np.eye(n, dtype=np.int32)], axis=1)
    for c in range(n):
        nz = np.flatnonzero(a[c:, c])
        if nz.size == 0:
            return None
        p = c + int(nz[0])
        if p != c:
            a[[c, p]] = a[[p, c]]
        row = a[c]
        inv = _EXP[255 - _LOG[row[c]]]
        a[c] = np.where(row != 0, _EXP[_LOG[row] + _LOG[inv]], 0)
        f = a[:, c].copy()
        f[c] = 0
        a ^= _gf_matmul(f[:, None], a[c][None, :])
    return a[:, n:]


def rs_encode(data: bytes, k: int, n: int) -> list[bytes]:
    """n shards of ceil(len(data) / k) bytes; any k of them give ``data`` back."""
    if not 1 <= k <= n <= 256:
        raise ValueError(f"bad code ({n}, {k})")
    size = -(-len(data) // k)
    d = np.frombuffer(data.ljust(k * size, b"\0"), np.uint8).reshape(k, size).astype(np.int32)
    shards = [bytes(r.astype(np.uint8)) for r in d]
    if n > k:
        par = _gf_matmul(_gf_rows(k, list(range(k, n))), d)
        shards += [bytes(r.astype(np.uint8)) for r in par]
    return shards


def rs_decode(shards: Mapping[int, bytes], k: int, length: int) -> bytes | None:
    """``length`` data bytes from any k shards (index -> bytes); None when that is impossible."""
    idx = sorted(shards)[:k]
    if len(idx) < k or len({len(shards[i]) for i in idx}) != 1:
        return None
    if idx == list(range(k)):
        return b"".join(shards[i] for i in idx)[:length]
    inv = _gf_invert(_gf_rows(k, idx))
    if inv is None:  # pragma: no cover - [I; C] has no singular k x k submatrix
        return None
    s = np.stack([np.frombuffer(shards[i], np.uint8) for i in idx]).astype(np.int32)
    return bytes(_gf_matmul(inv, s).astype(np.uint8).ravel())[:length]


def _box_hash(arr: RawFrames, frame: int, box: Box) -> bytes:
    person = b"DMwm" + struct.pack(">IHHHH", frame, box.row0, box.col0, box.row1, box.col1)
    h = hashlib.blake2b(digest_size=_HASH, person=person)
    words = arr[frame, :, box.row0 : box.row1, box.col0 : box.col1]
    h.update(np.ascontiguousarray(words, dtype=words.dtype.newbyteorder("<")).tobytes())
    return h.digest()


def _context(arr: RawFrames, fmt: PixelFormat) -> bytes:
    """Parameters bound into the signature without being carried."""
    _, planes, rows, cols = arr.shape
    pad = fmt.padding or (0, -1)
    return struct.pack(
        ">HHBBB?ii", rows, cols, planes, arr.dtype.itemsize, fmt.bits_stored, fmt.signed, *pad
    )


def _quick_score(raw: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], fmt: PixelFormat) -> int:
    """Cheap capacity proxy: pass-1 peak cells on one of the four sub-grids."""
    s = _to_stored(raw, fmt)
    h, w = s.shape
    if h < 6 or w < 6:
        return 0
    c = s[2 : h - 2 : 2, 2 : w - 2 : 2]
    p = (
        s[1 : h - 3 : 2, 2 : w - 2 : 2]
        + s[3 : h - 1 : 2, 2 : w - 2 : 2]
        + s[2 : h - 2 : 2, 1 : w - 3 : 2]
        + s[2 : h - 2 : 2, 3 : w - 1 : 2]
    ) >> 2
    e = c - p
    peak = (e == 0) | (e == -1)
    if fmt.padding is not None:
        peak &= (c < fmt.padding[0]) | (c > fmt.padding[1])
    return int(np.count_nonzero(peak))


def _spread(
    arr: RawFrames,
    f: int,
    boxes: list[Box],
    fmt: PixelFormat,
    block: bytes,
    slots: list[tuple[int, int]],
    scores: Mapping[tuple[int, int], int],
    parity: int,
) -> tuple[int, int] | None:
    """Embed G's shards into ``slots`` (weakest first); slots that cannot carry are dropped.

    Returns (values changed, carriers) or None, leaving the frame unchanged, when fewer than
    parity + 1 slots can carry a shard.
    """
    orig = arr[f].copy()
    tag = _tag(block)
    # skip slots whose peak count is far below even the smallest load (saves failed embeds)
    least = 2 * HEADER_BITS + 8 * (_SHARD.size - (-len(block) // max(1, len(slots) - parity)))
    active = [qi for qi in slots if _QUICK_SAFETY * scores[qi] >= least]
    while len(active) > parity:
        k = len(active) - parity
        shards = rs_encode(block, k, len(active))
        failed: tuple[int, int] | None = None
        for idx, (q, i) in enumerate(active):
            try:
                embed_region(arr[f, q], boxes[i], fmt, _SHARD.pack(k, idx, tag) + shards[idx])
            except WatermarkCapacityError:
                failed = (q, i)
                break
        if failed is None:
            return int(np.count_nonzero(arr[f] != orig)), len(active)
        arr[f] = orig
        active.remove(failed)
    return None


def _capacity_error(
    arr: RawFrames, f: int, boxes: list[Box], fmt: PixelFormat, gsize: int, parity: int
) -> WatermarkCapacityError:
    """The best (carriers, shard size) trade-off: capacity of the weakest carrier vs its load."""
    planes, rows, cols = arr.shape[1:]
    caps = sorted(
        (region_capacity(arr[f, q], b, fmt) for q in range(planes) for b in boxes),
        reverse=True,
    )
    best = (0, 8 * (_SHARD.size + gsize))
    for m in range(parity + 1, len(caps) + 1):
        need = 8 * (_SHARD.size - (-gsize // (m - parity)))
        if need - caps[m - 1] < best[1] - best[0]:
            best = (caps[m - 1], need)
    return WatermarkCapacityError(
        best[0], best[1], where=f"frame {f + 1} ({rows} x {cols} pixels, weakest carrier needed)"
    )


def seal_dataset(
    ds: pydicom.Dataset, *, identity_digest: bytes, signer: Ed25519PrivateKey, key_id: bytes
) -> SealStats:
    """Watermark every frame of ``ds`` in place (replaces ds.PixelData).

    Raises UnsupportedPixelsError for Pixel Data that cannot carry the watermark and
    WatermarkCapacityError (capacity and shortfall in bits) when a frame is too small or flat.
    """
    if len(identity_digest) != 16 or len(key_id) != 8:
        raise ValueError("identity_digest must be 16 bytes and key_id 8 bytes")
    fmt = pixel_format(ds)
    arr = frames_view(ds)
    nframes, planes, rows, cols = arr.shape
    grid = default_grid((rows, cols))
    boxes = grid_boxes((rows, cols), grid=grid)
    gsize = signed_block_size(len(boxes))
    if len(boxes) < 2:
        raise WatermarkCapacityError(0, gsize * 8, where=f"frame of {rows} x {cols} pixels")
    ctx = _context(arr, fmt)
    changed = 0
    carriers = 0
    for f in range(nframes):
        hashes = b"".join(_box_hash(arr, f, b) for b in boxes)
        body = _HEAD.pack(SIGNED_BLOCK_VERSION, key_id, identity_digest) + hashes
        block = body + signer.sign(_DOMAIN + ctx + _WHERE.pack(f, *grid) + body)
        scores = {
            (q, i): _quick_score(arr[f, q][b.slices()], fmt)
            for q in range(planes)
            for i, b in enumerate(boxes)
        }
        slots = sorted(scores, key=lambda qi: scores[qi])
        done = None
        for tol in parity_boxes(len(boxes)):
            done = _spread(arr, f, boxes, fmt, block, slots, scores, tol * planes)
            if done is not None:
                break
        if done is None:
            tol = parity_boxes(len(boxes))[-1]
            raise _capacity_error(arr, f, boxes, fmt, gsize, tol * planes)
        changed += done[0]
        carriers += done[1]
    write_back(ds, arr)
    return SealStats(nframes, changed, int(arr.size), carriers, gsize)


@dataclass
class _Frame:
    kind: Literal["missing", "unknown", "badsig", "verified"]
    key_id: bytes | None = None
    identity: bytes | None = None
    hashes: bytes = b""


def _subsets(idx: list[int], k: int) -> Iterator[list[int]]:
    """k-subsets of ``idx``: the first k, then leaving out 1, 2, ... shards (bounded)."""
    seen: set[tuple[int, ...]] = set()
    for drop in range(len(idx) - k + 1):
        for gone in itertools.combinations(idx, drop):
            keep = tuple(i for i in idx if i not in gone)[:k]
            if keep in seen:
                continue
            seen.add(keep)
            yield list(keep)
            if len(seen) >= _SEARCH_BUDGET:
                return


def _read_frame(
    arr: RawFrames,
    f: int,
    *,
    boxes: list[Box],
    grid: tuple[int, int],
    fmt: PixelFormat,
    ctx: bytes,
    public_keys: Mapping[bytes, Ed25519PublicKey],
) -> _Frame:
    planes = arr.shape[1]
    gsize = signed_block_size(len(boxes))
    groups: dict[tuple[int, int, int], dict[int, bytes]] = {}
    for q in range(planes):
        for b in boxes:
            payload = extract_region(arr[f, q], b, fmt)  # restores the carrier in place
            if payload is None or len(payload) <= _SHARD.size:
                continue
            k, idx, tag = _SHARD.unpack_from(payload)
            shard = payload[_SHARD.size :]
            if k < 1 or len(shard) != -(-gsize // k):
                continue
            groups.setdefault((k, tag, len(shard)), {}).setdefault(idx, shard)
    result = _Frame("missing")
    where = _WHERE.pack(f, *grid)
    for (k, tag, _), shards in sorted(groups.items(), key=lambda g: -len(g[1])):
        if len(shards) < k:
            continue
        for keep in _subsets(sorted(shards), k):
            block = rs_decode({i: shards[i] for i in keep}, k, gsize)
            if block is None or _tag(block) != tag:
                continue
            body, sig = block[:-_SIG], block[-_SIG:]
            ver, kid, ident = _HEAD.unpack_from(body)
            if ver != SIGNED_BLOCK_VERSION:
                continue
            key = public_keys.get(kid)
            if key is None:
                if result.kind == "missing":
                    result = _Frame("unknown", kid)
                break
            try:
                key.verify(sig, _DOMAIN + ctx + where + body)
            except InvalidSignature:
                if result.kind in ("missing", "unknown"):
                    result = _Frame("badsig", kid)
                continue
            return _Frame("verified", kid, ident, body[_HEAD.size :])
    return result


def unseal_dataset(
    ds: pydicom.Dataset,
    *,
    identity_digest: bytes,
    public_keys: Mapping[bytes, Ed25519PublicKey],
) -> UnsealResult:
    """Verify and restore the watermark of ``ds`` without modifying it."""
    try:
        fmt = pixel_format(ds)
        arr = frames_view(ds)
    except UnsupportedPixelsError as exc:
        return UnsealResult("no-watermark", None, (), (exc.reason,), None)
    nframes, _, rows, cols = arr.shape
    grid = default_grid((rows, cols))
    boxes = grid_boxes((rows, cols), grid=grid)
    ctx = _context(arr, fmt)
    frames = [
        _read_frame(arr, f, boxes=boxes, grid=grid, fmt=fmt, ctx=ctx, public_keys=public_keys)
        for f in range(nframes)
    ]
    if all(fr.kind == "missing" for fr in frames):
        return UnsealResult("no-watermark", None, (), ("no watermark found in any frame",), None)
    key_id = next((fr.key_id for fr in frames if fr.key_id is not None), None)
    reasons: list[str] = []
    regions: list[TamperedRegion] = []
    identity_bad = False
    for f, fr in enumerate(frames):
        if fr.kind == "unknown":
            kid = fr.key_id.hex() if fr.key_id is not None else "?"
            reasons.append(f"frame {f + 1}: signed by unknown key id {kid}")
        elif fr.kind == "badsig":
            reasons.append(f"frame {f + 1}: signature does not verify")
        elif fr.kind == "missing":
            reasons.append(
                f"frame {f + 1}: no watermark found (too many carriers damaged or removed)"
            )
            regions.append(TamperedRegion(f, 0, 0, rows, cols))
        else:
            if fr.identity != identity_digest:
                identity_bad = True
                reasons.append(f"frame {f + 1}: sealed for a different identity")
            for i, b in enumerate(boxes):
                if _box_hash(arr, f, b) != fr.hashes[i * _HASH : (i + 1) * _HASH]:
                    regions.append(TamperedRegion(f, b.row0, b.col0, b.row1, b.col1))
                    reasons.append(
                        f"frame {f + 1}: pixels in rows {b.row0}-{b.row1 - 1}, "
                        f"columns {b.col0}-{b.col1 - 1} differ from the sealed hash"
                    )
    kinds = {fr.kind for fr in frames}
    status: Status
    if "unknown" in kinds:
        status = "unknown-signer"
    elif "badsig" in kinds:
        status = "bad-signature"
    elif regions:
        status = "tampered"
    elif identity_bad:
        status = "identity-mismatch"
    else:
        status = "ok"
    restored = pixel_bytes(ds, arr) if status in ("ok", "identity-mismatch") else None
    return UnsealResult(status, key_id, tuple(regions), tuple(reasons), restored)

"""Frame-level watermark seal: signed block, erasure-coded spread, verification and restore.

Per frame a signed block G (see docs/WATERMARK.md) holding a keyed hash of every grid box's
original raw words is cut into k data shards and extended by m parity shards of a systematic
Reed-Solomon code over GF(256). Only the carrier slots of the cheapest plan (fewest estimated
changed values) hold a shard; m is the most carriers in any 2 x 2 block of boxes, so damage to
any one such block leaves G decodable, the signature verifies and the damage is localised.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pydicom
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The one key-id function; the old name stays for existing callers (tests, bench).
from discmaker.watermark.engine import (
    HEADER_BITS,
    T_MAX,
    THRESHOLDS,
    Box,
    PixelFormat,
    UnsupportedPixelsError,
    WatermarkCapacityError,
    complexity,
    default_grid,
    embed_region,
    extract_region,
    grid_boxes,
    region_capacity,
    to_stored,
    usable_ring,
)
from discmaker.watermark.pixels import RawFrames, frames_view, pixel_bytes, pixel_format, write_back

__all__ = [
    "SIGNED_BLOCK_VERSION",
    "SealStats",
    "TamperedRegion",
    "UnsealResult",
    "plan_carriers",
    "rs_decode",
    "rs_encode",
    "seal_dataset",
    "signed_block_size",
    "unseal_dataset",
]

SIGNED_BLOCK_VERSION = 3
_DOMAIN = b"discmaker/watermark/v3\x00"
_HEAD = struct.Struct(">B8s16s")  # version, key id, identity digest
_WHERE = struct.Struct(">IHH")  # frame, grid rows, grid cols: signed, not carried
_SHARD = struct.Struct(">BBB")  # k, shard index, tag (BLAKE2b-8 of G: groups the shards)
_HASH = 8
_SIG = 64
_SEARCH_BUDGET = 256  # decode attempts when some CRC-valid shards are inconsistent
_STARTS = 6  # carrier plans: greedy runs per parity, each from another cheap first carrier
_K_MAX = 32  # data shards at most (more only adds per-carrier overhead)
_SIDE_BITS = HEADER_BITS + 24  # per carrier: ring header + its saved LSBs + CRC-24 (+ length)

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


def signed_block_size(nboxes: int) -> int:
    """Bytes of G for a frame of ``nboxes`` boxes (89 + 8 x boxes)."""
    return _HEAD.size + _HASH * nboxes + _SIG


def _tag(block: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(block, digest_size=1, person=b"DMwmtag3").digest(), "big")


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
    exp.setflags(write=False)  # module-wide tables, shared by every thread: never written
    log.setflags(write=False)
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
    h.update(np.ascontiguousarray(words, dtype=words.dtype.newbyteorder("<")).data)  # no copy
    return h.digest()


def _context(arr: RawFrames, fmt: PixelFormat) -> bytes:
    """Parameters bound into the signature without being carried."""
    _, planes, rows, cols = arr.shape
    pad = fmt.padding or (0, -1)
    return struct.pack(
        ">HHBBB?ii", rows, cols, planes, arr.dtype.itemsize, fmt.bits_stored, fmt.signed, *pad
    )


def _windows(grid: tuple[int, int]) -> list[list[int]]:
    """Per box, the damage windows holding it: 2 x 2 blocks of boxes (1 x 2 / 2 x 1 on a thin
    grid); single boxes when one block would cover the whole grid (2 x 2 and smaller)."""
    gr, gc = grid
    out: list[list[int]] = [[] for _ in range(gr * gc)]
    if gr <= 2 and gc <= 2:
        return [[i] for i in range(gr * gc)]
    wr, wc = min(2, gr), min(2, gc)
    w = 0
    for r in range(gr - wr + 1):
        for c in range(gc - wc + 1):
            for i in range(r, r + wr):
                for j in range(c, c + wc):
                    out[i * gc + j].append(w)
            w += 1
    return out


@functools.lru_cache(maxsize=16)
def _target_labels(shape: tuple[int, int], grid: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Per interior pixel (rows/cols 1..-2): 2 x box + colour (0 black, pass 1) of the target
    it is in its box, or -1 for ring 0/1 pixels."""
    rows, cols = shape
    lab = np.full((rows, cols), -1, np.int32)
    for i, b in enumerate(grid_boxes(shape, grid=grid)):
        h, w = b.shape
        if h < 5 or w < 5:
            continue
        yy, xx = np.mgrid[0 : h - 4, 0 : w - 4]
        lab[b.row0 + 2 : b.row1 - 2, b.col0 + 2 : b.col1 - 2] = 2 * i + ((yy + xx) & 1)
    out = np.ascontiguousarray(lab[1:-1, 1:-1])
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _target_keys(shape: tuple[int, int], grid: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Per interior pixel: the base bin (box, colour) of `_slot_curves`' histogram, or the first
    dump bin (past every real bin) for ring 0/1 pixels."""
    nb = grid[0] * grid[1]
    nc = int(THRESHOLDS.size)
    lab = _target_labels(shape, grid)
    out = np.where(lab >= 0, lab * (2 * nc), nb * 4 * nc).astype(np.int32)
    out.setflags(write=False)
    return out


def _code_lut() -> npt.NDArray[np.int32]:
    lut = np.searchsorted(THRESHOLDS, np.arange(T_MAX + 1)).astype(np.int32)
    lut.setflags(write=False)
    return lut


_LUT = _code_lut()
_LUT2 = 2 * _LUT  # 2 x threshold code per complexity (histogram bin offset)
_LUT2.setflags(write=False)


def _stored_plane(
    plane: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], fmt: PixelFormat
) -> npt.NDArray[np.int16] | npt.NDArray[np.int32]:
    """Stored values as `to_stored`, in int16 when a sum of four of them still fits."""
    if fmt.bits_stored > 13:
        return to_stored(plane, fmt)
    v = (plane & fmt.mask).astype(np.int16)
    if fmt.signed:
        sb = 1 << (fmt.bits_stored - 1)
        v ^= sb
        v -= sb
    return v


_STRIP_PIXELS = 32768  # per slice of `_slot_curves`: temporaries stay cached (and off mmap)


def _slot_curves(
    plane: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
    grid: tuple[int, int],
    fmt: PixelFormat,
) -> npt.NDArray[np.int64]:
    """Cumulative counts per box, colour, kind (carrier, active) and threshold code.

    One vectorised pass over the original plane (both colours predicted from original values,
    padding neighbours excluded), in strips of rows: shape (boxes, 2, 2, codes).
    """
    rows, cols = plane.shape
    nb = grid[0] * grid[1]
    nc = int(THRESHOLDS.size)
    out = np.zeros((nb, 2, 2, nc), np.int64)
    if rows < 5 or cols < 5:
        return out
    base = _target_keys((rows, cols), grid)
    total = nb * 2 * nc * 2  # bins past this one are the dump (ring pixels, padding neighbours)
    cnt = np.zeros(total + 2 * nc, np.int64)
    strip = max(8, _STRIP_PIXELS // cols)
    for r0 in range(1, rows - 1, strip):  # interior rows r0 .. r1 - 1
        r1 = min(r0 + strip, rows - 1)
        s = _stored_plane(plane[r0 - 1 : r1 + 1], fmt)
        u, d = s[:-2, 1:-1], s[2:, 1:-1]
        lf, rt = s[1:-1, :-2], s[1:-1, 2:]
        c = s[1:-1, 1:-1]
        q = u + d
        q += lf
        q += rt
        q >>= 2
        q -= c  # -e: a peak (e in {0, -1}) is q in {0, 1}
        peak: npt.NDArray[np.bool_] = q.view(q.dtype.str.replace("i", "u")) <= 1
        cx = complexity(u, d, lf, rt, fmt)
        key = np.take(_LUT2, cx)
        key += base[r0 - 1 : r1 - 1]
        key += peak
        if fmt.padding is not None:
            plo, phi = fmt.padding
            pad = s == plo if plo == phi else (s >= plo) & (s <= phi)
            if pad.any():
                bad = pad[:-2, 1:-1] | pad[2:, 1:-1]
                bad |= pad[1:-1, :-2]
                bad |= pad[1:-1, 2:]
                bad |= pad[1:-1, 1:-1]
                key[bad] = total
        cnt += np.bincount(key.ravel(), minlength=cnt.size)
    hist = cnt[:total].reshape(nb, 2, nc, 2)
    out[:, :, 0] = hist[..., 1]  # carriers
    out[:, :, 1] = hist[..., 0] + hist[..., 1]  # active (selected) targets
    return np.cumsum(out, axis=3)


def _load_bits(gsize: int, k: int) -> int:
    nbytes = _SHARD.size - (-gsize // k)
    return _SIDE_BITS + 8 * nbytes + (2 * (nbytes + 16).bit_length() - 5)


def _costs(curves: npt.NDArray[np.int64], loads: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Estimated values changed per slot (rows) for each load (columns): pass 1 filled at the
    threshold holding half the load, pass 2 the rest; inf when the slot cannot hold it."""
    c1, a1, c2, a2 = curves[:, 0, 0], curves[:, 0, 1], curves[:, 1, 0], curves[:, 1, 1]
    last = c1.shape[1] - 1
    ld = loads[None, :]
    i1 = np.minimum((c1[:, None, :] < ((ld + 1) // 2)[..., None]).sum(-1), last)
    r = np.arange(c1.shape[0])[:, None]
    n1 = np.minimum(c1[r, i1], ld)
    cost = (a1[r, i1] - c1[r, i1]) + n1 / 2
    n2 = ld - n1
    i2 = np.minimum((c2[:, None, :] < n2[..., None]).sum(-1), last)
    cost = cost + np.where(n2 > 0, a2[r, i2] - c2[r, i2] + n2 / 2, 0)
    # pass 2 short at the half split: pass 1 takes more (upper bound: every target moves)
    cost = np.where(c2[r, i2] < n2, a1[:, -1:] + a2[:, -1:], cost)
    cost = np.where((c1[:, -1:] + c2[:, -1:]) * 15 < ld * 16 + 160, np.inf, cost)
    return cost + HEADER_BITS / 2


@dataclass(frozen=True)
class _Plan:
    carriers: tuple[int, ...]  # slot indices (plane x boxes + box), shard i -> carriers[i]
    k: int
    cost: float


def plan_carriers(
    costs: npt.NDArray[np.float64], grid: tuple[int, int], planes: int
) -> _Plan | None:
    """Carrier slots and data-shard count k minimising the estimated values changed.

    ``costs[slot, k - 1]`` is the cost of one shard of a k-shard code in that slot. The parity
    m = n - k is the largest number of carriers in any damage window (2 x 2 boxes, all planes),
    so any one window of damaged boxes leaves k intact shards.
    """
    nb = grid[0] * grid[1]
    nslots = costs.shape[0]
    kmax = costs.shape[1]
    wins = _windows(grid)
    nwin = 1 + max(max(w) for w in wins)
    best: _Plan | None = None
    ref = costs[:, min(kmax, 4) - 1]
    rank = [int(i) for i in np.argsort(ref, kind="stable") if np.isfinite(ref[i])]
    for m in range(1, min(nslots, 4 * planes) + 1):
        for first in rank[:_STARTS]:  # greedy from a few different first carriers
            count = [0] * nwin
            order: list[int] = []
            taken: set[int] = set()
            for slot in [first, *rank]:
                ws = wins[slot % nb]
                if slot not in taken and all(count[w] < m for w in ws):
                    for w in ws:
                        count[w] += 1
                    order.append(slot)
                    taken.add(slot)
            if len(order) <= m:
                continue
            tot = np.cumsum(costs[order], axis=0)
            top = min(len(order), m + kmax)
            # tot[n - 1, n - m - 1] for n = m + 1 .. top
            diag: list[float] = tot[np.arange(m, top), np.arange(top - m)].tolist()
            for j, c in enumerate(diag):
                if math.isfinite(c) and (best is None or c < best.cost):
                    n = m + 1 + j
                    best = _Plan(tuple(order[:n]), n - m, c)
    return best


def _spread(
    arr: RawFrames, f: int, boxes: list[Box], grid: tuple[int, int], fmt: PixelFormat, block: bytes
) -> tuple[int, int] | None:
    """Embed G's shards into the cheapest carrier plan; a slot whose embed fails is excluded
    and the plan redone. Returns (values changed, carriers) or None, leaving the frame
    unchanged, when no plan remains."""
    planes = arr.shape[1]
    nb = len(boxes)
    nslots = planes * nb
    kmax = max(1, min(nslots - 1, _K_MAX))
    loads = np.array([_load_bits(len(block), k) for k in range(1, kmax + 1)], np.int64)
    curves = np.concatenate([_slot_curves(arr[f, q], grid, fmt) for q in range(planes)])
    costs = _costs(curves, loads)
    if fmt.padding is not None:  # the ring header needs usable ring-0 pixels
        for q in range(planes):
            for i, b in enumerate(boxes):
                if np.isfinite(costs[q * nb + i, 0]):
                    ring = usable_ring(to_stored(arr[f, q][b.slices()], fmt), fmt)
                    if ring.size < HEADER_BITS + 16:
                        costs[q * nb + i] = np.inf
    tag = _tag(block)
    while (plan := plan_carriers(costs, grid, planes)) is not None:
        shards = rs_encode(block, plan.k, len(plan.carriers))
        failed = -1
        saved: list[tuple[RawFrames, RawFrames]] = []  # (carrier region view, original words)
        for idx, slot in enumerate(plan.carriers):
            q, i = divmod(slot, nb)
            region = arr[f, q][boxes[i].slices()]
            saved.append((region, region.copy()))
            try:
                embed_region(arr[f, q], boxes[i], fmt, _SHARD.pack(plan.k, idx, tag) + shards[idx])
            except WatermarkCapacityError:
                failed = slot
                break
        if failed < 0:  # only carrier regions change
            changed = sum(int(np.count_nonzero(r != o)) for r, o in saved)
            return changed, len(plan.carriers)
        for region, words in saved:
            region[...] = words
        costs[failed] = np.inf
    return None


def _capacity_error(
    arr: RawFrames, f: int, boxes: list[Box], fmt: PixelFormat, gsize: int
) -> WatermarkCapacityError:
    """The best (carriers, shard size) trade-off with one parity shard: capacity of the weakest
    carrier needed vs its load."""
    planes, rows, cols = arr.shape[1:]
    caps = sorted(
        (region_capacity(arr[f, q], b, fmt) for q in range(planes) for b in boxes),
        reverse=True,
    )
    best = (0, 8 * (_SHARD.size + gsize))
    for m in range(2, len(caps) + 1):
        need = 8 * (_SHARD.size - (-gsize // (m - 1)))
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
    nframes, _, rows, cols = arr.shape
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
        done = _spread(arr, f, boxes, grid, fmt, block)
        if done is None:
            raise _capacity_error(arr, f, boxes, fmt, gsize)
        changed += done[0]
        carriers += done[1]
    write_back(ds, arr)
    return SealStats(nframes, changed, int(arr.size), carriers, gsize)


@dataclass
class _Frame:
    kind: Literal["missing", "damaged", "unknown", "badsig", "verified"]
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
    # CRC-valid shards that do not give G: a watermark was there, too many carriers are damaged
    result = _Frame("damaged" if groups else "missing")
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
                if result.kind in ("missing", "damaged"):
                    result = _Frame("unknown", kid)
                break
            try:
                key.verify(sig, _DOMAIN + ctx + where + body)
            except InvalidSignature:
                if result.kind in ("missing", "damaged", "unknown"):
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
        elif fr.kind in ("missing", "damaged"):
            reasons.append(
                f"frame {f + 1}: watermark carriers found but too many damaged to verify"
                if fr.kind == "damaged"
                else f"frame {f + 1}: no watermark found (too many carriers damaged or removed)"
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

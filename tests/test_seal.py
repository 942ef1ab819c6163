"""Frame-level seal: sign, embed, verify, localise, restore (discmaker.watermark.seal, .pixels)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from discmaker.crypto.signing import key_id
from discmaker.sample import ct_slice, mr_slice
from discmaker.watermark.engine import (
    UnsupportedPixelsError,
    WatermarkCapacityError,
    default_grid,
    embed_region,
    extract_region,
    grid_boxes,
)
from discmaker.watermark.pixels import frames_view, pixel_format
from discmaker.watermark.seal import (
    plan_carriers,
    rs_decode,
    rs_encode,
    seal_dataset,
    unseal_dataset,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()
KID = key_id(PUB)
IDENT = bytes(range(32))  # a header block (format v4: 32 bytes)


def make_ds(
    shape: tuple[int, int],
    *,
    bs: int = 16,
    alloc: int = 16,
    signed: bool = False,
    photo: str = "MONOCHROME2",
    spp: int = 1,
    planar: int = 0,
    frames: int = 1,
    padding: int | None = None,
    high_bits: bool = False,
    noise: int = 1,
    seed: int = 0,
) -> Dataset:
    rng = np.random.default_rng(seed)
    rows, cols = shape
    lo = -(1 << (bs - 1)) if signed else 0
    hi = (1 << (bs - 1)) - 1 if signed else (1 << bs) - 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    planes = []
    for f in range(frames):
        for q in range(spp):
            mid = (lo + hi) // 2 + 7 * q + 3 * f
            img = mid + (yy // 11) - (xx // 17) + rng.integers(-noise, noise + 1, shape)
            img[0, : cols // 4] = hi  # both range ends occur
            img[-1, : cols // 4] = lo
            if padding is not None:
                img[:, : cols // 8] = padding
            planes.append(np.clip(img, lo, hi))
    st = np.stack(planes).reshape(frames, spp, rows, cols).astype(np.int64)
    raw = st & ((1 << bs) - 1)
    if high_bits and alloc > bs:
        raw |= rng.integers(0, 1 << alloc, raw.shape) & ~((1 << bs) - 1) & ((1 << alloc) - 1)
    if spp == 3 and planar == 0:
        raw = raw.transpose(0, 2, 3, 1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = alloc, bs, bs - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photo
    if spp == 3:
        ds.PlanarConfiguration = planar
    if frames > 1:
        ds.NumberOfFrames = frames
    if padding is not None:
        ds.PixelPaddingValue = padding & 0xFFFF if signed else padding
    ds.PixelData = raw.astype(np.uint8 if alloc == 8 else "<u2").tobytes()
    return ds


def seal_and_check(ds: Dataset) -> Dataset:
    original = ds.PixelData
    stats = seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)
    assert stats.values_changed > 0 and ds.PixelData != original
    res = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "ok", res.reasons
    assert res.key_id == KID and res.regions == ()
    assert res.restored_pixel_data == original
    return ds


MATRIX = [
    pytest.param({"shape": (512, 512), "bs": 8, "alloc": 8}, id="u8in8-mono2-512x512"),
    pytest.param(
        {"shape": (100, 100), "bs": 8, "alloc": 16, "high_bits": True}, id="u8in16-hi-100x100"
    ),
    pytest.param(
        {"shape": (100, 100), "bs": 10, "signed": True, "photo": "MONOCHROME1"},
        id="s10in16-mono1-100x100",
    ),
    pytest.param({"shape": (512, 512), "bs": 12, "high_bits": True}, id="u12in16-mono2-512x512"),
    pytest.param(
        {"shape": (512, 512), "bs": 12, "signed": True, "padding": -2000, "high_bits": True},
        id="s12in16-pad-mono2-512x512",
    ),
    pytest.param({"shape": (64, 64), "bs": 14, "noise": 0}, id="u14in16-mono2-64x64"),
    pytest.param(
        {"shape": (128, 128), "bs": 15, "signed": True, "high_bits": True},
        id="s15in16-mono2-128x128",
    ),
    pytest.param(
        {"shape": (1955, 1841), "bs": 16, "signed": True, "padding": -2000},
        id="s16in16-pad-mono2-1955x1841",
    ),
    pytest.param({"shape": (256, 200), "bs": 16}, id="u16in16-mono2-256x200"),
    pytest.param(
        {"shape": (240, 320), "bs": 8, "alloc": 8, "spp": 3, "photo": "RGB"},
        id="rgb8-planar0-240x320",
    ),
    pytest.param(
        {"shape": (240, 320), "bs": 8, "alloc": 8, "spp": 3, "planar": 1, "photo": "RGB"},
        id="rgb8-planar1-240x320",
    ),
    pytest.param(
        {"shape": (100, 100), "bs": 8, "alloc": 8, "spp": 3, "photo": "YBR_FULL"},
        id="ybrfull8-100x100",
    ),
    pytest.param(
        {"shape": (200, 300), "bs": 8, "alloc": 8, "photo": "PALETTE COLOR"}, id="palette8-200x300"
    ),
    pytest.param({"shape": (256, 256), "bs": 12, "frames": 3}, id="u12in16-mono2-3frames-256x256"),
]


@pytest.mark.parametrize("kw", MATRIX)
def test_format_matrix_seal_unseal(kw: dict[str, object]) -> None:
    seal_and_check(make_ds(**kw))  # type: ignore[arg-type]


def test_padding_value_stored_unsigned_is_understood() -> None:
    ds = make_ds((256, 256), bs=16, signed=True, padding=-2000)
    assert ds.PixelPaddingValue == 63536
    assert pixel_format(ds).padding == (-2000, -2000)
    before = frames_view(ds)
    seal_and_check(ds)
    after = frames_view(ds)
    pad = before.astype(np.int64) == 63536
    assert np.array_equal(before[pad], after[pad])


def sealed_512() -> tuple[Dataset, bytes]:
    ds = make_ds((512, 512), bs=12, signed=True, seed=3)
    original = ds.PixelData
    seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)
    return ds, original


def tamper(ds: Dataset, rows: slice, cols: slice) -> Dataset:
    out = copy.deepcopy(ds)
    a = np.frombuffer(out.PixelData, "<u2").reshape(512, 512).copy()
    a[rows, cols] = np.where((a[rows, cols] & 0xFFF) == 0x7FF, a[rows, cols] - 1, a[rows, cols] + 1)
    out.PixelData = a.tobytes()
    return out


def boxes_hit(rows: slice, cols: slice) -> set[tuple[int, int, int, int]]:
    hit = set()
    for b in grid_boxes((512, 512), grid=default_grid((512, 512))):
        if (
            rows.start < b.row1
            and rows.stop > b.row0
            and cols.start < b.col1
            and cols.stop > b.col0
        ):
            hit.add((b.row0, b.col0, b.row1, b.col1))
    return hit


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        pytest.param(slice(300, 301), slice(77, 78), id="1px"),
        pytest.param(slice(127, 129), slice(255, 257), id="2x2-corner-of-4-boxes"),
        pytest.param(slice(200, 240), slice(400, 440), id="40x40"),
        pytest.param(slice(110, 150), slice(10, 50), id="40x40-across-2-boxes"),
    ],
)
def test_tampering_is_localised(rows: slice, cols: slice) -> None:
    ds, _ = sealed_512()
    res = unseal_dataset(tamper(ds, rows, cols), headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "tampered"
    assert res.restored_pixel_data is None
    got = {(r.row0, r.col0, r.row1, r.col1) for r in res.regions}
    assert got == boxes_hit(rows, cols)
    assert all(r.frame == 0 for r in res.regions)


def test_tampering_every_box_is_localised() -> None:
    ds, _ = sealed_512()
    for b in grid_boxes((512, 512), grid=default_grid((512, 512))):
        r, c = (b.row0 + b.row1) // 2, (b.col0 + b.col1) // 2
        res = unseal_dataset(
            tamper(ds, slice(r, r + 1), slice(c, c + 1)),
            headers={4: IDENT},
            public_keys={KID: PUB},
        )
        assert res.status == "tampered"
        assert [(x.row0, x.col0, x.row1, x.col1) for x in res.regions] == [
            (b.row0, b.col0, b.row1, b.col1)
        ]


def test_identity_mismatch() -> None:
    ds, original = sealed_512()
    res = unseal_dataset(ds, headers={4: bytes(32)}, public_keys={KID: PUB})
    assert res.status == "identity-mismatch" and res.regions == ()
    assert res.restored_pixel_data == original


def test_unknown_signer_and_forged_key_id() -> None:
    other = Ed25519PrivateKey.generate()
    ds = make_ds((256, 256), bs=12)
    seal_dataset(ds, header=IDENT, signer=other, key_id=key_id(other.public_key()))
    res = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "unknown-signer" and res.key_id == key_id(other.public_key())
    ds = make_ds((256, 256), bs=12)
    seal_dataset(ds, header=IDENT, signer=other, key_id=KID)
    res = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "bad-signature" and res.restored_pixel_data is None


def test_unsealed_dataset_is_no_watermark() -> None:
    ds = make_ds((256, 256), bs=12)
    before = ds.PixelData
    res = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "no-watermark" and ds.PixelData == before


def test_unseal_does_not_modify_dataset() -> None:
    ds, _ = sealed_512()
    sealed = ds.PixelData
    unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    assert ds.PixelData == sealed


def test_unseal_without_restore_verifies_the_same() -> None:
    """A check that writes no originals asks for no restored bytes: same verdict, none made."""
    ds, _ = sealed_512()
    full = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB})
    bare = unseal_dataset(ds, headers={4: IDENT}, public_keys={KID: PUB}, restore=False)
    assert full.status == bare.status == "ok" and full.restored_pixel_data is not None
    assert bare.restored_pixel_data is None
    assert (bare.key_id, bare.regions, bare.version) == (full.key_id, full.regions, full.version)


def test_too_small_frame_raises_with_numbers() -> None:
    ds = make_ds((16, 16), bs=12)
    before = ds.PixelData
    with pytest.raises(WatermarkCapacityError) as info:
        seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)
    assert info.value.needed_bits > info.value.capacity_bits >= 0
    assert str(info.value.needed_bits) in str(info.value) and ds.PixelData == before


def test_noisy_frame_raises_not_skips() -> None:
    ds = make_ds((128, 128), bs=16, noise=3000)
    with pytest.raises(WatermarkCapacityError) as info:
        seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)
    assert info.value.shortfall_bits > 0


def read(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    "name",
    ["examples_overlay.dcm", "examples_palette.dcm", "examples_rgb_color.dcm", "image_dfl.dcm"],
)
def test_pydicom_files_roundtrip(name: str) -> None:
    seal_and_check(read(name))


def test_pydicom_rgb_as_planar_1() -> None:
    ds = read("examples_rgb_color.dcm")
    a = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, 3)
    ds.PixelData = np.ascontiguousarray(a.transpose(2, 0, 1)).tobytes()
    ds.PlanarConfiguration = 1
    seal_and_check(ds)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm"])
def test_pydicom_small_noisy_files_report_capacity(name: str) -> None:
    ds = read(name)
    with pytest.raises(WatermarkCapacityError) as info:
        seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)
    assert info.value.shortfall_bits > 0


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "liver_1frame.dcm", "rtdose.dcm", "SC_ybr_full_422_uncompressed.dcm"]
)
def test_pydicom_unsupported_files(name: str) -> None:
    ds = read(name)
    with pytest.raises(UnsupportedPixelsError):
        seal_dataset(ds, header=IDENT, signer=KEY, key_id=KID)


def test_odd_length_8bit_pixel_data_keeps_pad_byte() -> None:
    ds = make_ds((99, 101), bs=8, alloc=8, noise=0)
    ds.PixelData = ds.PixelData + b"\x00"
    seal_and_check(ds)
    assert len(ds.PixelData) == 99 * 101 + 1


# -- v2/v3: the signed block is spread over all boxes with a Reed-Solomon erasure code -----------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_reed_solomon_any_k_shards_decode(data: st.DataObject) -> None:
    block = data.draw(st.binary(min_size=1, max_size=600))
    n = data.draw(st.integers(1, 80))
    k = data.draw(st.integers(1, n))
    shards = rs_encode(block, k, n)
    assert len(shards) == n and len({len(s) for s in shards}) == 1
    assert b"".join(shards[:k])[: len(block)] == block  # systematic
    keep = data.draw(st.permutations(range(n)))[:k]
    assert rs_decode({i: shards[i] for i in keep}, k, len(block)) == block
    if k > 1:
        assert rs_decode({i: shards[i] for i in keep[:-1]}, k, len(block)) is None


def test_carrier_plan_respects_damage_windows() -> None:
    rng = np.random.default_rng(0)
    costs = np.sort(rng.uniform(100, 200, (16, 12)), axis=1)[:, ::-1].copy()
    costs[[0, 3, 12, 15]] = np.inf  # padding corners cannot carry
    plan = plan_carriers(costs, (4, 4), 1)
    assert plan is not None and plan.k >= 1
    m = len(plan.carriers) - plan.k
    for r in range(3):
        for c in range(3):
            block = {r * 4 + c, r * 4 + c + 1, r * 4 + c + 4, r * 4 + c + 5}
            assert len(block & set(plan.carriers)) <= m
    assert not {0, 3, 12, 15} & set(plan.carriers)
    two = plan_carriers(np.full((4, 3), 50.0), (2, 2), 1)  # a 2 x 2 grid: one box at a time
    assert two is not None and len(two.carriers) - two.k == 1


def carriers(ds: Dataset) -> dict[tuple[int, int, int, int], int]:
    """Carrier boxes -> k of their shard."""
    arr = frames_view(ds)
    fmt = pixel_format(ds)
    out = {}
    for b in grid_boxes((ds.Rows, ds.Columns), grid=default_grid((ds.Rows, ds.Columns))):
        payload = extract_region(arr[0, 0].copy(), b, fmt)
        if payload is not None:
            out[(b.row0, b.col0, b.row1, b.col1)] = payload[0]
    return out


def test_only_carriers_change_and_any_2x2_block_is_tolerated() -> None:
    ds, original = sealed_512()
    held = carriers(ds)
    ks = set(held.values())
    assert len(ks) == 1 and len(held) > ks.pop() >= 1
    a = np.frombuffer(ds.PixelData, "<u2").reshape(512, 512)
    o = np.frombuffer(original, "<u2").reshape(512, 512)
    for b in grid_boxes((512, 512), grid=(4, 4)):
        same = np.array_equal(a[b.slices()], o[b.slices()])
        assert same == ((b.row0, b.col0, b.row1, b.col1) not in held)


@pytest.mark.parametrize("corner", [(r, c) for r in (128, 256, 384) for c in (128, 256, 384)])
def test_every_2x2_block_of_damaged_boxes_is_localised(corner: tuple[int, int]) -> None:
    ds, _ = sealed_512()
    rows, cols = slice(corner[0] - 20, corner[0] + 20), slice(corner[1] - 20, corner[1] + 20)
    res = unseal_dataset(tamper(ds, rows, cols), headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "tampered"
    assert {(r.row0, r.col0, r.row1, r.col1) for r in res.regions} == boxes_hit(rows, cols)


def test_damaged_carrier_box_is_localised() -> None:
    ds, _ = sealed_512()
    for box in carriers(ds):
        rows, cols = slice(box[0], box[2]), slice(box[1], box[3])
        res = unseal_dataset(tamper(ds, rows, cols), headers={4: IDENT}, public_keys={KID: PUB})
        assert res.status == "tampered"
        assert [(r.row0, r.col0, r.row1, r.col1) for r in res.regions] == [box]


def test_five_damaged_carriers_are_never_ok() -> None:
    ds, _ = sealed_512()
    out = ds
    for r, c in [(60, 60), (60, 200), (60, 320), (200, 60), (200, 200)]:
        out = tamper(out, slice(r, r + 2), slice(c, c + 2))
    res = unseal_dataset(out, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "tampered" and res.restored_pixel_data is None


def test_box_spliced_from_another_sealed_image_is_localised() -> None:
    ds, _ = sealed_512()
    donor = make_ds((512, 512), bs=12, signed=True, seed=4)
    seal_dataset(donor, header=IDENT, signer=KEY, key_id=KID)
    a = np.frombuffer(ds.PixelData, "<u2").reshape(512, 512).copy()
    d = np.frombuffer(donor.PixelData, "<u2").reshape(512, 512)
    a[128:256, 256:384] = d[128:256, 256:384]  # a valid, CRC-correct shard of another seal
    out = copy.deepcopy(ds)
    out.PixelData = a.tobytes()
    res = unseal_dataset(out, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "tampered"
    assert [(r.row0, r.col0, r.row1, r.col1) for r in res.regions] == [(128, 256, 256, 384)]


def test_forged_shards_with_the_right_tag_are_outvoted() -> None:
    ds, original = sealed_512()
    arr = frames_view(ds)
    fmt = pixel_format(ds)
    held = [
        b
        for b in grid_boxes((512, 512), grid=(4, 4))
        if (b.row0, b.col0, b.row1, b.col1) in carriers(ds)
    ]
    for box in held[:1]:  # as many forged shards as the parity (at least 1) tolerates
        payload = extract_region(arr[0, 0], box, fmt)  # restores the box
        assert payload is not None
        forged = payload[:3] + bytes(b ^ 0x5A for b in payload[3:])  # same k, index and tag
        embed_region(arr[0, 0], box, fmt, forged)
    out = copy.deepcopy(ds)
    out.PixelData = arr.astype("<u2").tobytes()
    res = unseal_dataset(out, headers={4: IDENT}, public_keys={KID: PUB})
    # the forged shards fail the signature and are left out; the boxes restore to the sealed
    # pixels (the forger re-embedded into the originals), so the image itself verifies
    assert res.status == "ok" and res.restored_pixel_data == original


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(lambda: ct_slice(3), id="ct-512-sigma12"),
        pytest.param(lambda: ct_slice(0), id="ct-512-slice0"),
        pytest.param(lambda: ct_slice(3, rows=256, cols=256), id="ct-256"),
        pytest.param(lambda: ct_slice(1, rows=256, cols=256), id="ct-256-slice1"),
        pytest.param(lambda: mr_slice(2), id="mr-256"),
    ],
)
def test_noisy_sample_slices_seal(load: Callable[[], Dataset]) -> None:
    ds = seal_and_check(load())
    stats_ds = load()
    stats = seal_dataset(stats_ds, header=IDENT, signer=KEY, key_id=KID)
    assert stats.carriers >= 4 and stats_ds.PixelData == ds.PixelData  # deterministic


def test_a_frame_spliced_in_from_another_sealed_image_is_named() -> None:
    """Frame 2 of image B put into image A: its G is B's (another header), so the frame is
    reported as sealed for another image, not as a changed header."""
    a = make_ds((128, 128), frames=3, seed=1)
    b = make_ds((128, 128), frames=3, seed=2)
    seal_dataset(a, header=IDENT, signer=KEY, key_id=KID)
    seal_dataset(b, header=bytes(32), signer=KEY, key_id=KID)
    size = 128 * 128 * 2
    a.PixelData = a.PixelData[:size] + b.PixelData[size : 2 * size] + a.PixelData[2 * size :]
    res = unseal_dataset(a, headers={4: IDENT}, public_keys={KID: PUB})
    assert res.status == "identity-mismatch"
    assert res.foreign_frames == (1,)

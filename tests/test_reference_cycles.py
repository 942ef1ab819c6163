"""Sealed and checked datasets are freed as soon as they are dropped, without waiting for a
full garbage collection (issue 13: a reference cycle through pydicom's private block cache
kept every sealed image, its Pixel Data with it, alive for hundreds of images in a worker)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest
from pydicom.dataset import Dataset

from discmaker.author.prepare import _mark_watermarked
from discmaker.check.verify import _has_bookkeeping


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _freed_after(step: Callable[[Dataset], object]) -> bool:
    ds = Dataset()
    ds.PixelData = bytes(512 * 1024)
    step(ds)
    ref = weakref.ref(ds)
    del ds
    return ref() is None


@pytest.mark.usefixtures("no_collector")
def test_marked_dataset_is_freed_without_the_collector() -> None:
    assert _freed_after(lambda ds: _mark_watermarked(ds, bytes(8)))


@pytest.mark.usefixtures("no_collector")
def test_checked_dataset_is_freed_without_the_collector() -> None:
    def look(ds: Dataset) -> bool:
        ds.add_new(0x00090010, "LO", "DISCMAKER 1")  # as read from a sealed file
        assert _has_bookkeeping(ds)
        return True

    assert _freed_after(look)


@pytest.mark.usefixtures("no_collector")
def test_pydicom_private_block_alone_makes_the_cycle() -> None:
    """The control: without the fix, the same steps leave the dataset to the collector (if
    pydicom ever stops caching blocks, this fails and the fix can go)."""
    assert not _freed_after(lambda ds: ds.private_block(0x0009, "DISCMAKER 1", create=True))


@pytest.mark.usefixtures("no_collector")
def test_a_parsed_dicomdir_leaves_nothing_to_the_collector() -> None:
    """The records of a received DICOMDIR are freed as soon as its parse returns (a recursive
    walk used to keep every record of a 3,000-image disc alive until a full collection)."""
    from pydicom.data import get_testdata_file

    from discmaker.format.dicomdir import parse_dicomdir

    with open(get_testdata_file("DICOMDIR"), "rb") as f:  # type: ignore[arg-type]
        data = f.read()
    parsed = parse_dicomdir(data)
    assert parsed.records
    assert gc.collect() == 0

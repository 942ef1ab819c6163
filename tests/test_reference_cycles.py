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

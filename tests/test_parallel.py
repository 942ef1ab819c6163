"""discmaker.parallel: per-run context, and worker processes that are safe to start."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from discmaker import parallel
from discmaker.parallel import ContextPool, process_context, run_jobs


@contextmanager
def _offset(base: int) -> Iterator[int]:
    yield base


def _add(context: int, job: int) -> int:
    return context + job


def test_each_run_sees_its_own_context_in_thread_and_in_processes() -> None:
    jobs = list(range(20))
    assert list(run_jobs(_add, jobs, setup=_offset, setup_args=(100,))) == [100 + j for j in jobs]
    pooled = list(run_jobs(_add, jobs, setup=_offset, setup_args=(7,), workers=2))
    assert pooled == [7 + j for j in jobs]


def test_a_multi_threaded_host_never_forks_its_workers() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert process_context().get_start_method() in ("forkserver", "spawn")
        pooled = list(run_jobs(_add, list(range(10)), setup=_offset, setup_args=(1,), workers=2))
        assert pooled == list(range(1, 11))
    finally:
        release.set()
        other.join()


def _niceness_and_pid(context: int, job: int) -> tuple[int, int, int]:
    return context + job, os.getpriority(os.PRIO_PROCESS, 0), os.getpid()


def test_a_context_pool_keeps_its_workers_and_their_context_and_runs_them_below_the_host() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with ContextPool(_offset, (40,), workers=2, nice=5) as pool:
        pool.start()
        first = [pool.submit(_niceness_and_pid, j).result() for j in range(6)]
        later = [pool.submit(_niceness_and_pid, j).result() for j in range(6)]
    assert [value for value, _, _ in first + later] == [40 + j for j in range(6)] * 2
    assert {nice for _, nice, _ in first + later} == {min(own + 5, 19)}
    pids = {pid for _, _, pid in first + later}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # the same workers, not new ones


def _frozen(context: int, job: int) -> tuple[int, int]:
    return context + job, gc.get_freeze_count()


def test_workers_freeze_what_they_start_with_and_the_caller_is_left_as_it_is() -> None:
    # A worker's collector never looks at what the worker held before its setup (with fork:
    # the parent's objects), so its full collections do not wait for a quarter of the
    # parent's objects' worth of new ones (issue 13: sealed datasets in reference cycles).
    own = gc.get_freeze_count()
    in_thread = list(run_jobs(_frozen, list(range(3)), setup=_offset, setup_args=(0,)))
    assert in_thread == [(j, own) for j in range(3)]
    pooled = list(run_jobs(_frozen, list(range(10)), setup=_offset, setup_args=(0,), workers=2))
    assert [value for value, _ in pooled] == list(range(10))
    assert all(frozen > 0 for _, frozen in pooled)
    with ContextPool(_offset, (0,), workers=1) as pool:
        assert pool.submit(_frozen, 1).result()[1] > 0
    assert gc.get_freeze_count() == own


_BUFFER_PLACE = """
import ctypes, sys
from pathlib import Path
from discmaker.allocator import keep_image_buffers

def place():
    buffer = bytearray(4 << 20)
    address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            return rest[-1] if len(rest) == 5 else "mapping"

before = place()
print(before, keep_image_buffers(), place())
"""


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
    reason="the allocator's thresholds are set only with glibc, and seen through /proc",
)
def test_image_buffers_come_from_the_heap_once_the_allocator_is_set() -> None:
    # In a fresh process glibc maps a 4 MiB buffer on its own (zero-filled by the kernel
    # again each time); with discmaker.allocator's thresholds it comes from the heap.
    result = subprocess.run(
        [sys.executable, "-c", _BUFFER_PLACE], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["mapping", "True", "[heap]"]


def test_each_worker_sets_the_allocator_before_its_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(parallel, "keep_image_buffers", lambda: calls.append("allocator"))
    monkeypatch.setattr(parallel.gc, "freeze", lambda: calls.append("freeze"))  # not this process

    @contextmanager
    def setup() -> Iterator[int]:
        calls.append("setup")
        yield 0

    monkeypatch.setattr(parallel._ProcessContext, "value", None, raising=False)
    monkeypatch.setattr(parallel._ProcessContext, "manager", None, raising=False)
    parallel._init_process(setup, ())  # what a worker process runs first
    assert calls == ["freeze", "allocator", "setup"]
    list(run_jobs(_frozen, list(range(3)), setup=_offset, setup_args=(0,)))
    assert calls == ["freeze", "allocator", "setup"]  # the caller's own thread: not set

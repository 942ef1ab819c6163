"""discmaker.parallel: per-run context, and worker processes that are safe to start."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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

"""Run one task over many jobs, in this thread or in worker processes, with no shared state.

Each run builds its own context with ``setup`` and hands it to every call of ``task`` as an
argument. In this thread the context is a local variable; in a worker process it is created by
the pool's initializer and kept in that process only (a process belongs to one pool, and the
pool to one run), so two runs, in two threads of one host, never see each other's context.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.context
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

from discmaker.allocator import keep_image_buffers

C = TypeVar("C")
J = TypeVar("J")
R = TypeVar("R")

Setup = Callable[..., AbstractContextManager[Any]]
"""Makes a run's context; a context manager, so that what it opens is closed again."""

MIN_JOBS_FOR_POOL = 8
"""Below this many jobs, starting worker processes costs more than it saves."""


def default_workers() -> int:
    """The cores this process may use (the CLI's default; the library's default is 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _ProcessContext:
    """The one context of a worker process: set by the pool initializer, nowhere else."""

    value: Any = None
    manager: AbstractContextManager[Any] | None = None


def process_context() -> multiprocessing.context.BaseContext:
    """How to start worker processes safely from this process, now.

    Forking copies the whole process, including any lock that another thread holds at that
    moment; the child then hangs on it. With this thread alone there is no other thread, and
    ``fork`` is safe and fastest (the workers share the parent's imports: 0.4 s less on a
    300-image check). In a multi-threaded host (a disc station, a service) the workers start
    from a clean ``forkserver`` process instead (``spawn`` where there is none).
    """
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _init_process(setup: Setup, args: tuple[Any, ...]) -> None:
    # The worker's collector leaves what the worker holds before its setup alone (with fork:
    # a copy of the whole parent, whose pages then stay shared), and goes by the worker's own
    # objects. CPython runs a full collection only once the objects promoted since the last
    # one are a quarter of those that survived it; a forked worker inherits the parent's
    # count, so with a large parent, cyclic garbage that reached the oldest generation (one
    # sealed dataset in a reference cycle: its Pixel Data too) waited hundreds or thousands
    # of jobs (issue 13). After the freeze, this collection examines next to nothing and sets
    # that count to the worker's own. Worker processes only: the caller's is left as it is.
    gc.freeze()
    gc.collect()
    keep_image_buffers()
    manager = setup(*args)
    _ProcessContext.value = manager.__enter__()
    _ProcessContext.manager = manager  # closed when the worker process exits


def _init_nice_process(nice: int, setup: Setup, args: tuple[Any, ...]) -> None:
    if nice:
        os.nice(nice)
    _init_process(setup, args)


def _ready() -> bool:
    return _ProcessContext.manager is not None


def _in_process(task: Callable[[Any, J], R], job: J) -> R:
    return task(_ProcessContext.value, job)


def run_jobs(
    task: Callable[[C, J], R],
    jobs: Sequence[J],
    *,
    setup: Setup,
    setup_args: tuple[Any, ...],
    workers: int = 1,
    chunksize: int = 4,
) -> Iterator[R]:
    """Yield ``task(context, job)`` for every job, in order.

    ``setup(*setup_args)`` must be a picklable, module-level callable returning a context
    manager whose value is the context; ``task`` must be a module-level function. With
    ``workers`` > 1 and enough jobs the work runs in that many processes, started as
    :func:`process_context` says. (A script that starts them from a multi-threaded process
    needs the usual ``if __name__ == "__main__":`` guard, as with any forkserver or spawn.)
    """
    if workers <= 1 or len(jobs) < MIN_JOBS_FOR_POOL:
        with setup(*setup_args) as context:
            for job in jobs:
                yield task(context, job)
        return
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=process_context(),
        initializer=_init_process,
        initargs=(setup, setup_args),
    ) as pool:
        try:
            yield from pool.map(partial(_in_process, task), jobs, chunksize=chunksize)
        except BaseException:  # an error, a cancel from the caller, or the caller stopped early
            pool.shutdown(wait=True, cancel_futures=True)
            raise


class ContextPool:
    """Worker processes that live longer than one run: each holds the context ``setup``
    made once (as :func:`run_jobs`' workers do) and takes jobs one by one as they come, for a
    long-lived host that wants work done before it is asked for (the disc station prepares
    the instances of a study while the rest of it still arrives).

    Started as :func:`process_context` says, when it is made; :meth:`close` (or the end of a
    ``with`` block) stops the workers, dropping the jobs not started yet. ``nice``: the
    workers' scheduling niceness above this process's (``os.nice``), so that work done
    early yields the cores to what the host must do now.
    """

    def __init__(
        self, setup: Setup, setup_args: tuple[Any, ...], *, workers: int, nice: int = 0
    ) -> None:
        self._workers = max(1, workers)
        self._pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=process_context(),
            initializer=_init_nice_process,
            initargs=(nice, setup, setup_args),
        )

    def submit(self, task: Callable[[Any, J], R], job: J) -> Future[R]:
        """``task(context, job)`` in a worker, as soon as one is free."""
        return self._pool.submit(_in_process, task, job)

    def start(self) -> None:
        """Start every worker now and wait until each has its context, so that the first
        jobs do not wait for processes to start (which may take a second)."""
        for started in [self._pool.submit(_ready) for _ in range(self._workers)]:
            started.result()

    def pids(self) -> list[int]:
        """The worker processes' ids (for monitoring, and tests that kill one)."""
        return list(getattr(self._pool, "_processes", None) or ())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ContextPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MIN_JOBS_FOR_POOL", "ContextPool", "default_workers", "process_context", "run_jobs"]

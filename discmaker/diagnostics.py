"""Warnings raised while parsing untrusted input, captured per call and per thread.

pydicom reports many oddities of a file (a value that does not fit its VR, a deprecated
encoding) with :func:`warnings.warn`. Left alone they escape to the host application, and a host
that runs with warnings as errors would turn a valid image into a refusal. discmaker turns them
into notes about the file instead.

:func:`warnings.catch_warnings` is not safe in threads before Python 3.14: it swaps the
process-wide filters and ``showwarning`` and puts back whatever it saw on entry, so two
overlapping captures in two threads leave the filters of one of them behind. Here one capture
is active while any discmaker call is parsing (a count under a lock), and each warning is
routed to the thread that raised it; a thread that is not capturing has its warnings shown
exactly as the host's own ``showwarning`` would. When the last capture ends, everything is as
it was.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

MAX_NOTES = 20
"""Notes kept per call: a hostile file can raise thousands of warnings."""


class _Router:
    lock: ClassVar[threading.Lock] = threading.Lock()
    active: ClassVar[int] = 0
    saved: ClassVar[Any] = None
    local: ClassVar[threading.local] = threading.local()

    @classmethod
    def show(
        cls,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        notes: list[str] | None = getattr(cls.local, "notes", None)
        if notes is None:
            original = cls.saved[1] if cls.saved else warnings.showwarning
            original(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())
        if text not in notes and len(notes) < MAX_NOTES:
            notes.append(text)


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect, in the returned list, the text of each warning this thread raises inside."""
    notes: list[str] = []
    outer: list[str] | None = getattr(_Router.local, "notes", None)
    _Router.local.notes = notes
    with _Router.lock:
        if _Router.active == 0:
            _Router.saved = (list(warnings.filters), warnings.showwarning)
            warnings.simplefilter("always")
            warnings.showwarning = _Router.show
        _Router.active += 1
    try:
        yield notes
    finally:
        _Router.local.notes = outer
        if outer is not None:
            outer.extend(n for n in notes if n not in outer)
        with _Router.lock:
            _Router.active -= 1
            if _Router.active == 0 and _Router.saved is not None:
                filters, show = _Router.saved
                warnings.filters[:] = filters  # type: ignore[index]
                warnings.showwarning = show
                warnings._filters_mutated()  # type: ignore[attr-defined]
                _Router.saved = None


__all__ = ["MAX_NOTES", "captured_warnings"]

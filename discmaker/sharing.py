"""One object for equal values, so that what thousands of images repeat is kept once.

A study of 3,000 slices repeats its UIDs, descriptions, transfer syntax and status words in
every image's record; parsed, unpickled or read again, each copy is a new string. A
:class:`Shared` pool, one per run (never a module global), hands back the first equal
value it has seen instead.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar, cast

T = TypeVar("T", bound=Hashable)


class Shared:
    """``shared(value)``: the first value equal to ``value`` this pool has seen (``value``
    itself the first time). Not thread-safe: one pool per run."""

    __slots__ = ("_first",)

    def __init__(self) -> None:
        self._first: dict[Hashable, Hashable] = {}

    def __call__(self, value: T) -> T:
        return cast(T, self._first.setdefault(value, value))

    def __len__(self) -> int:
        return len(self._first)


__all__ = ["Shared"]

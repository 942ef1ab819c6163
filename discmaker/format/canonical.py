"""Canonical JSON: one byte sequence per value, so a signature over the bytes means one thing.

Rules (what :func:`dumps` writes and :func:`loads` accepts):

- objects with string keys, emitted in sorted (Unicode code point) order, no duplicate keys;
- arrays, strings, integers, ``true``, ``false``, ``null`` -- **no floats**, no NaN/Infinity;
- UTF-8 without a byte order mark, non-ASCII characters written as themselves (no ``\\u``
  escapes except where JSON requires them), no lone surrogates;
- compact separators (``,`` and ``:``), no insignificant whitespace, one ``\\n`` at the end;
- at most :data:`MAX_DEPTH` nested arrays/objects.

:func:`loads` reads data from a received disc, i.e. hostile input: it checks the size before
decoding, the nesting depth before parsing (so the recursive parser can never be driven into a
deep recursion), and raises :class:`~discmaker.errors.DiscError` for anything outside the rules.
With ``require_canonical=True`` it also refuses valid JSON that is not byte-for-byte what
:func:`dumps` would write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from discmaker.errors import DiscError, InternalError

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted (a top-level ``{}`` is depth 1)."""

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    check_circular=False,  # _check_value has already walked the value with a depth bound
)

# Structural characters and string openers; everything else is skipped at C speed.
_STRUCTURAL = re.compile(r'[\[\]{}"]')
# A \u escape of a UTF-16 surrogate (D800-DFFF): the only way a string decoded from strict
# UTF-8 JSON text can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# The rest of a JSON string after its opening quote (possessive: linear, no backtracking).
_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*+"', re.DOTALL)


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` canonically.

    ``obj`` may hold dicts with ``str`` keys, lists/tuples, ``str``, ``int``, ``bool`` and
    ``None``. Anything else (floats above all) is a programming error: :class:`InternalError`.
    """
    _check_value(obj, 0)
    try:
        text = _ENCODER.encode(obj)
        return (text + "\n").encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InternalError(f"cannot write canonical JSON: {exc}") from exc


def loads(data: bytes, *, max_bytes: int, require_canonical: bool = False) -> Any:
    """Parse canonical-JSON ``data`` read from an untrusted source.

    Raises :class:`DiscError` when ``data`` is larger than ``max_bytes``, is not UTF-8, is
    nested deeper than :data:`MAX_DEPTH`, holds a float, NaN/Infinity, a duplicate key or a
    lone surrogate, or is not JSON at all; with ``require_canonical`` also when it is not
    exactly what :func:`dumps` writes for the parsed value.
    """
    if max_bytes <= 0:
        raise InternalError(f"canonical.loads: max_bytes must be positive, not {max_bytes}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InternalError(f"canonical.loads expects bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise DiscError(f"JSON document is {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        text = bytes(data).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise DiscError(f"JSON document is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise DiscError("JSON document starts with a byte order mark")
    _check_depth(text)
    # Equal string values (a study's UIDs, the transfer syntax, the status words of every
    # image) are kept once, not once per image: a manifest lists tens of thousands of images.
    shared: dict[str, str] = {}

    def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        return _unique_object(pairs, shared)

    try:
        value = json.loads(
            text,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=unique_object,
        )
    except DiscError:
        raise
    except json.JSONDecodeError as exc:
        raise DiscError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits
        raise DiscError(f"not valid JSON: {exc}") from None
    if not require_canonical and not _SURROGATE_ESCAPE.search(text):
        return value  # nothing left to refuse: no need to write the value out again
    try:
        canonical = (_ENCODER.encode(value) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise DiscError("JSON document holds a lone surrogate (\\ud800-\\udfff escape)") from None
    if require_canonical and canonical != bytes(data):
        raise DiscError(
            "JSON document is not in canonical form (sorted keys, compact, newline at end)"
        )
    return value


def _check_value(obj: Any, depth: int) -> None:
    if obj is None or isinstance(obj, bool | int | str):
        return
    if isinstance(obj, float):
        raise InternalError(f"canonical JSON cannot hold a float ({obj!r}); use an int or str")
    if isinstance(obj, Mapping | list | tuple):
        if depth + 1 > MAX_DEPTH:
            raise InternalError(f"canonical JSON is nested deeper than {MAX_DEPTH} levels")
        if isinstance(obj, Mapping):
            for key, value in obj.items():
                if not isinstance(key, str):
                    raise InternalError(
                        f"canonical JSON object keys must be str, not {type(key).__name__}"
                    )
                _check_value(value, depth + 1)
        else:
            for item in obj:
                _check_value(item, depth + 1)
        return
    raise InternalError(f"canonical JSON cannot hold a {type(obj).__name__}")


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, without recursion, in one linear pass."""
    depth = 0
    pos = 0
    search = _STRUCTURAL.search
    while (match := search(text, pos)) is not None:
        char = match.group()
        pos = match.end()
        if char == '"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:
                raise DiscError("not valid JSON: unterminated string")
            pos = rest.end()
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise DiscError(f"JSON document is nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _refuse_float(token: str) -> Any:
    raise DiscError(f"JSON document holds a number with a fraction or exponent ({token[:32]})")


def _refuse_constant(token: str) -> Any:
    raise DiscError(f"JSON document holds {token}, which is not allowed")


def _unique_object(pairs: list[tuple[str, Any]], shared: dict[str, str]) -> dict[str, Any]:
    result = {
        key: shared.setdefault(value, value) if type(value) is str else value
        for key, value in pairs
    }
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DiscError(f"JSON object has the key {key[:64]!r} more than once")
            seen.add(key)
    return result


__all__ = ["MAX_DEPTH", "dumps", "loads"]

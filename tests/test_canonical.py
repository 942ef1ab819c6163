"""Canonical JSON: exact bytes out, hostile bytes refused."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discmaker.errors import DiscError, InternalError
from discmaker.format import canonical

BIG = 1 << 20


def test_dumps_exact_bytes() -> None:
    value = {"b": [1, True, None], "a": "é\u2603", "c": {"z": -3, "y": ""}}
    assert canonical.dumps(value) == ('{"a":"é☃","b":[1,true,null],"c":{"y":"","z":-3}}\n'.encode())


def test_dumps_sorts_by_code_point_and_escapes_control_characters() -> None:
    assert canonical.dumps({"b": 1, "B": 2, "a\x01": '\n\t"'}) == (
        b'{"B":2,"a\\u0001":"\\n\\t\\"","b":1}\n'
    )


def test_dumps_accepts_tuples_as_arrays() -> None:
    assert canonical.dumps({"x": (1, 2)}) == b'{"x":[1,2]}\n'


@pytest.mark.parametrize(
    "bad",
    [
        1.5,
        {"a": 0.0},
        [float("nan")],
        {"a": float("inf")},
        {1: "int key"},
        {"a": b"bytes"},
        {"a": {1, 2}},
        {"a": object()},
        "\ud800",
    ],
)
def test_dumps_refuses_what_is_not_canonical(bad: Any) -> None:
    with pytest.raises(InternalError):
        canonical.dumps(bad)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit_applies_both_ways() -> None:
    ok = canonical.dumps(_nested(canonical.MAX_DEPTH))
    assert canonical.loads(ok, max_bytes=BIG) == _nested(canonical.MAX_DEPTH)
    with pytest.raises(InternalError):
        canonical.dumps(_nested(canonical.MAX_DEPTH + 1))
    deep = b"[" * (canonical.MAX_DEPTH + 1) + b"]" * (canonical.MAX_DEPTH + 1)
    with pytest.raises(DiscError, match="nested deeper"):
        canonical.loads(deep, max_bytes=BIG)


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    data = canonical.dumps({"k": "[" * 500 + '\\"{' * 100, "l": ["]]]]"]})
    assert canonical.loads(data, max_bytes=BIG)["l"] == ["]]]]"]


def test_huge_nesting_is_refused_quickly_without_recursion() -> None:
    data = b"[" * 500_000
    start = time.perf_counter()
    with pytest.raises(DiscError, match="nested deeper"):
        canonical.loads(data, max_bytes=BIG)
    assert time.perf_counter() - start < 1.0


def test_pathological_unterminated_strings_are_linear() -> None:
    data = b'["' + b'\\"' * 200_000
    start = time.perf_counter()
    with pytest.raises(DiscError):
        canonical.loads(data, max_bytes=BIG)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"a":1.0}\n', "fraction or exponent"),
        (b'{"a":1e3}\n', "fraction or exponent"),
        (b'{"a":-0.5}\n', "fraction or exponent"),
        (b'{"a":NaN}\n', "NaN"),
        (b'{"a":Infinity}\n', "Infinity"),
        (b'{"a":-Infinity}\n', "Infinity"),
        (b'{"a":1,"a":2}\n', "more than once"),
        (b'{"x":{"b":1,"b":1}}\n', "more than once"),
        (b'{"a":"\xff"}\n', "UTF-8"),
        (b'{"a":"\xc3"}\n', "UTF-8"),
        (b"\xef\xbb\xbf{}\n", "byte order mark"),
        (b'{"a":"\\ud800"}\n', "surrogate"),
        (b'{"a":"\\uDC00"}\n', "surrogate"),
        (b'{"\\udbff":1}\n', "surrogate"),
        (b'{"a":["x\\ude00y"]}\n', "surrogate"),
        (b'{"a":1}\n{"b":2}\n', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"a":"line\nbreak"}', "not valid JSON"),
        (b"[" + b"9" * 5000 + b"]", "not valid JSON"),
        (b'"unterminated', "unterminated"),
    ],
)
def test_loads_refuses_hostile_input(data: bytes, match: str) -> None:
    with pytest.raises(DiscError, match=match):
        canonical.loads(data, max_bytes=BIG)


def test_loads_refuses_oversize_before_parsing() -> None:
    data = canonical.dumps({"a": "x" * 100})
    assert canonical.loads(data, max_bytes=len(data))["a"] == "x" * 100
    with pytest.raises(DiscError, match="more than the"):
        canonical.loads(data, max_bytes=len(data) - 1)


def test_loads_rejects_nonpositive_limit_as_our_bug() -> None:
    with pytest.raises(InternalError):
        canonical.loads(b"{}\n", max_bytes=0)


def test_loads_accepts_valid_pair_escape_and_noncanonical_layout() -> None:
    assert canonical.loads(b'{ "b" : [ 1 ] , "a" : "\\ud83d\\ude00" }', max_bytes=BIG) == {
        "a": "\U0001f600",
        "b": [1],
    }


def test_an_escaped_backslash_before_u_is_no_surrogate() -> None:
    assert canonical.loads(b'{"a":"\\\\ud800"}\n', max_bytes=BIG) == {"a": "\\ud800"}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=6), st.booleans())
def test_a_lone_surrogate_is_refused_wherever_it_is(text: str, as_key: bool) -> None:
    # json.dumps escapes every non-ASCII character, lone surrogates as \udXXX.
    value = {text: 1} if as_key else {"a": [text]}
    data = json.dumps(value, ensure_ascii=True).encode()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(DiscError, match="surrogate"):
            canonical.loads(data, max_bytes=BIG)
    else:
        assert canonical.loads(data, max_bytes=BIG) == value


def test_equal_strings_are_kept_once() -> None:
    doc = canonical.loads(b'[{"uid":"1.2.3","n":"1.2.3"},{"uid":"1.2.3"}]\n', max_bytes=BIG)
    assert doc == [{"uid": "1.2.3", "n": "1.2.3"}, {"uid": "1.2.3"}]
    assert doc[0]["uid"] is doc[0]["n"] is doc[1]["uid"]


def test_require_canonical() -> None:
    good = canonical.dumps({"a": 1, "b": "ü"})
    assert canonical.loads(good, max_bytes=BIG, require_canonical=True) == {"a": 1, "b": "ü"}
    for variant in (
        b'{"b":"\xc3\xbc","a":1}\n',  # key order
        b'{"a": 1,"b":"\xc3\xbc"}\n',  # whitespace
        b'{"a":1,"b":"\xc3\xbc"}',  # no final newline
        b'{"a":1,"b":"\\u00fc"}\n',  # needless escape
    ):
        assert canonical.loads(variant, max_bytes=BIG) == {"a": 1, "b": "ü"}
        with pytest.raises(DiscError, match="canonical form"):
            canonical.loads(variant, max_bytes=BIG, require_canonical=True)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_round_trip_is_exact_and_stable(value: Any) -> None:
    data = canonical.dumps(value)
    assert data.endswith(b"\n")
    parsed = canonical.loads(data, max_bytes=BIG, require_canonical=True)
    assert parsed == value
    assert canonical.dumps(parsed) == data
    assert json.loads(data) == value  # plain JSON readers agree

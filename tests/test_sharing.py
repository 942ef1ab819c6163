"""What thousands of images repeat is kept once (issue 13: memory flat up to a Blu-ray)."""

from __future__ import annotations

import pickle

import pytest

from discmaker.format.identity import IDENTITY_KEYWORDS, Identity
from discmaker.sharing import Shared


def test_equal_values_come_back_as_the_first_one_seen() -> None:
    one = Shared()
    first = "".join(["1.2.", "840"])
    again = "".join(["1.2.8", "40"])
    assert first == again and first is not again
    assert one(first) is first and one(again) is first
    assert one(("a", "b")) == ("a", "b") and len(one) == 2


def test_an_identity_reads_like_the_dict_it_replaces() -> None:
    attrs = {k: f"value of {k}" for k in IDENTITY_KEYWORDS}
    identity = Identity.of(attrs)
    assert identity == attrs and dict(identity) == attrs
    assert list(identity) == list(IDENTITY_KEYWORDS)
    assert identity.get("Nothing", "") == "" and identity["Modality"] == "value of Modality"
    assert pickle.loads(pickle.dumps(identity)) == identity
    with pytest.raises(ValueError, match="23 values"):
        Identity(("too", "few"))


def test_a_shared_identity_keeps_the_instance_its_own() -> None:
    one = Shared()
    a = Identity.of({k: "".join(["x", k]) for k in IDENTITY_KEYWORDS})
    b = Identity.of({k: "".join(["x", k]) for k in IDENTITY_KEYWORDS})
    sa, sb = a.shared(one), b.shared(one)
    assert sa == sb == a
    assert sa["StudyInstanceUID"] is sb["StudyInstanceUID"]
    assert sa["SOPInstanceUID"] is a["SOPInstanceUID"]
    assert sb["SOPInstanceUID"] is b["SOPInstanceUID"]  # an instance's own is not pooled

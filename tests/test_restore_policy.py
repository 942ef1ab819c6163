"""Restore never sends partial or altered data toward a PACS silently (issue 10).

A series with an image that did not verify is held back whole unless the operator allows a
partial series; altered copies go only to a separate folder given explicitly, never inside
the import folder; nothing is left behind when nothing was restored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker.check.restore import restore_disc
from discmaker.crypto.trust import TrustStore
from discmaker.errors import UsageError
from discmaker.ui.cli import main
from tests.conftest import Centre

CT = "PT000000/ST000000/SE000000"
MR = "PT000000/ST000000/SE000001"


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def _alter(disc: Path, rel: str) -> None:
    path = disc / rel
    ds = dcmread(path)
    ds.PatientName = "SOMEONE^ELSE"
    ds.save_as(path, enforce_file_format=True)


def _images(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("IM*") if p.is_file()}


def test_a_series_with_an_altered_slice_is_held_back_whole(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    _alter(disc, f"{CT}/IM000002")
    out = tmp_path / "import"
    result = restore_disc(disc, trust=_trust(centre), out=out)
    assert result.exit_code == 1
    restored = _images(out)
    assert restored and all(p.startswith(MR) for p in restored), restored
    ct_on_disc = {p for p in _images(disc) if p.startswith(CT)}
    assert set(result.held_back) == ct_on_disc - {f"{CT}/IM000002"}
    assert set(result.refused) == ct_on_disc


def test_allow_partial_writes_the_verified_slices_of_that_series(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    _alter(disc, f"{CT}/IM000002")
    out = tmp_path / "import"
    result = restore_disc(disc, trust=_trust(centre), out=out, allow_partial=True)
    assert result.held_back == ()
    assert f"{CT}/IM000001" in _images(out) and f"{CT}/IM000002" not in _images(out)


def test_the_guide_can_be_asked_before_anything_is_written(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    _alter(disc, f"{CT}/IM000002")
    asked: list[tuple[Sequence[str], Sequence[str]]] = []

    def ask(held: Sequence[str], failed: Sequence[str]) -> bool:
        asked.append((held, failed))
        assert not (tmp_path / "import").exists()  # nothing written while asking
        return False

    result = restore_disc(disc, trust=_trust(centre), out=tmp_path / "import", allow_partial=ask)
    ((held, failed),) = asked
    assert list(failed) == [f"{CT}/IM000002"] and set(held) == set(result.held_back)


def test_nothing_restorable_leaves_no_folder(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    _alter(disc, f"{CT}/IM000002")
    _alter(disc, f"{MR}/IM000000")
    out = tmp_path / "import"
    result = restore_disc(disc, trust=_trust(centre), out=out)
    assert result.restored == () and result.out == ""
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [disc.name]  # no staging folder either


def test_altered_copies_go_only_to_the_separate_folder(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    _alter(disc, f"{CT}/IM000002")
    out, altered = tmp_path / "import", tmp_path / "altered"
    code = main(
        [
            "restore", str(disc), "--trust", str(centre.cert_path), "--out", str(out),
            "--tampered-to", str(altered),
        ]
    )  # fmt: skip
    assert code == 1
    assert _images(altered) == {f"{CT}/IM000002"}
    assert f"{CT}/IM000002" not in _images(out)
    assert "TAMPERED" not in {p.name for p in out.rglob("*")}


@pytest.mark.parametrize("where", ["inside", "around", "same"])
def test_the_altered_folder_may_not_touch_the_import_folder(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path, where: str
) -> None:
    disc = disc_copy()
    out = tmp_path / "import"
    altered = {"inside": out / "ALTERED", "around": tmp_path, "same": out}[where]
    if where == "around":
        out = tmp_path / "x" / "import"
        altered = tmp_path / "x"
    with pytest.raises(UsageError, match="apart from the import folder"):
        restore_disc(disc, trust=_trust(centre), out=out, tampered_to=altered)
    assert not out.exists()


def test_a_verified_disc_restores_everything(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    result = restore_disc(disc, trust=_trust(centre), out=tmp_path / "import")
    assert result.exit_code == 0 and result.held_back == () and result.refused == ()
    assert _images(tmp_path / "import") == _images(disc)

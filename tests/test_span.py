"""Studies larger than one medium: several complete, signed discs, and the set check."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker import errors
from discmaker.author.create import estimate_disc_size, plan_discs
from discmaker.author.intake import scan
from discmaker.check.verify import check_disc, check_set
from discmaker.crypto.trust import TrustStore
from discmaker.format.manifest import MANIFEST_PATH, parse
from discmaker.ui.cli import main
from tests.conftest import Centre, author_disc


def _capacities(study: Path) -> tuple[int, int]:
    """(fits the CT series alone but not CT + MR, fits one CT slice but not the series)."""
    intake = scan([study])
    ct = [i for i in intake.instances if i.modality == "CT"]
    return estimate_disc_size(ct) + 4096, estimate_disc_size(ct[:2]) + 4096


def test_series_stay_together(study_dir: Path, centre: Centre, tmp_path: Path) -> None:
    whole_ct, _ = _capacities(study_dir)
    out = tmp_path / "set.iso"
    result = author_disc(centre, [study_dir], out, label="SPAN", span=True, capacity=whole_ct)
    assert [p.name for p in result.outputs] == ["set_1of2.iso", "set_2of2.iso"]
    trust = TrustStore.from_paths([centre.cert_path])
    reports = [check_disc(p, trust=trust, workers=1) for p in result.outputs]
    # Each disc verifies on its own, but alone it is an incomplete set (exit 2)...
    assert [r.verdict.value for r in reports] == ["incomplete-set"] * 2
    assert [r.exit_code for r in reports] == [2, 2]
    assert [r.missing_discs for r in reports] == [((2, "SPAN_2OF2"),), ((1, "SPAN_1OF2"),)]
    assert [(r.disc_number, r.disc_count) for r in reports] == [(1, 2), (2, 2)]
    modalities = [{v.series_label.split()[0] for v in r.images} for r in reports]
    assert modalities == [{"CT"}, {"MR"}]
    assert [r.fileset_id for r in reports] == ["SPAN_1OF2", "SPAN_2OF2"]
    assert check_set(reports).complete
    assert check_set(reports).exit_code == 0  # ...and checked together, the set verifies
    assert [d.verdict.value for d in check_set(reports).discs] == ["verified"] * 2
    assert check_set(reports[:1]).exit_code == 2  # a disc missing: an incomplete set
    assert "disc 2 of 2 is missing" in check_set(reports[:1]).findings[0].message
    assert not check_set([reports[0], reports[0]]).complete


def test_a_series_larger_than_the_medium_is_split(
    study_dir: Path, centre: Centre, tmp_path: Path
) -> None:
    _, two_slices = _capacities(study_dir)
    out = tmp_path / "DISC"
    result = author_disc(
        centre, [study_dir], out, format="folder", label="SPLIT", span=True, capacity=two_slices
    )
    assert len(result.outputs) >= 3
    trust = TrustStore.from_paths([centre.cert_path])
    reports = [check_disc(p, trust=trust, workers=1) for p in result.outputs]
    assert all(r.exit_code == 2 and r.missing_discs for r in reports)  # each alone
    assert check_set(reports).exit_code == 0
    assert sum(len(r.images) for r in reports) == 10
    first = parse((result.outputs[0] / MANIFEST_PATH).read_bytes())
    assert len(first.disc.members) == len(result.outputs)
    readme = (result.outputs[1] / "README.TXT").read_text()
    assert f"(disc 2 of {len(result.outputs)})" in readme
    ds = dcmread(result.outputs[0] / "DICOMDIR")
    assert ds.FileSetID == first.disc.fileset_id
    assert check_set(reports).complete


def test_discs_of_another_set_are_noticed(study_dir: Path, centre: Centre, tmp_path: Path) -> None:
    whole_ct, _ = _capacities(study_dir)
    a = author_disc(
        centre, [study_dir], tmp_path / "a.iso", label="A", span=True, capacity=whole_ct
    )
    b = author_disc(
        centre, [study_dir], tmp_path / "b.iso", label="B", span=True, capacity=whole_ct
    )
    trust = TrustStore.from_paths([centre.cert_path])
    mixed = [check_disc(a.outputs[0], trust=trust), check_disc(b.outputs[1], trust=trust)]
    assert any("different sets" in f.message for f in check_set(mixed).findings)


def test_without_span_a_large_study_is_refused(
    study_dir: Path, centre: Centre, tmp_path: Path
) -> None:
    whole_ct, _ = _capacities(study_dir)
    with pytest.raises(errors.TooLargeError, match="split"):
        author_disc(centre, [study_dir], tmp_path / "x.iso", capacity=whole_ct)
    assert list(tmp_path.iterdir()) == []


def test_plan_refuses_an_image_larger_than_the_medium(study_dir: Path) -> None:
    intake = scan([study_dir])
    with pytest.raises(errors.TooLargeError, match="alone does not fit"):
        plan_discs(intake.instances, 200_000)


@pytest.mark.external
def test_iso_volume_set_fields(study_dir: Path, centre: Centre, tmp_path: Path) -> None:
    if shutil.which("isoinfo") is None:
        pytest.skip("isoinfo is not installed (apt-get install genisoimage)")
    whole_ct, _ = _capacities(study_dir)
    result = author_disc(
        centre, [study_dir], tmp_path / "s.iso", label="VS", span=True, capacity=whole_ct
    )
    info = subprocess.run(
        ["isoinfo", "-d", "-i", str(result.outputs[1])], capture_output=True, text=True, check=True
    ).stdout
    assert "Volume set size is: 2" in info
    assert "Volume set sequence number is: 2" in info


def test_cli_span_and_set_check(
    study_dir: Path,
    centre: Centre,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from discmaker.crypto import signing
    from tests.conftest import PASSPHRASE

    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
    whole_ct, _ = _capacities(study_dir)
    args = [
        "author",
        str(study_dir),
        "--key",
        str(centre.key_path),
        "--cert",
        str(centre.cert_path),
    ]
    out = tmp_path / "cli.iso"
    assert main([*args, "--out", str(out), "--span", "--capacity", str(whole_ct), "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert len(outputs) == 2
    code = main(["check", *outputs, "--trust", str(centre.cert_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["complete"] and len(doc["discs"]) == 2
    assert main(["check", outputs[0], "--trust", str(centre.cert_path)]) == 2  # incomplete
    assert "INCOMPLETE" in capsys.readouterr().out
    # the whole set given: each disc's own summary says so too, not only the exit code
    assert main(["check", *outputs, "--trust", str(centre.cert_path)]) == 0
    text = capsys.readouterr().out
    assert "INCOMPLETE" not in text and text.count("VERIFIED") >= 2


def test_existing_names_are_checked_for_every_disc_before_work(
    study_dir: Path, centre: Centre, tmp_path: Path
) -> None:
    whole_ct, _ = _capacities(study_dir)
    (tmp_path / "set.iso").write_text("a set never writes this name")
    (tmp_path / "set_1of2.iso").write_text("an older disc")
    with pytest.raises(errors.OutputError, match=r"set_1of2\.iso already exists"):
        author_disc(centre, [study_dir], tmp_path / "set.iso", span=True, capacity=whole_ct)
    assert (tmp_path / "set_1of2.iso").read_text() == "an older disc"
    (tmp_path / "set_1of2.iso").unlink()
    result = author_disc(centre, [study_dir], tmp_path / "set.iso", span=True, capacity=whole_ct)
    assert len(result.outputs) == 2

"""Where `restore` may write: a new real folder outside the disc, refused before any work;
and a hostile disc's images that cannot be written again are held back, not a crash."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from rich.console import Console

import discmaker.check.restore as restore_mod
from discmaker.check.restore import restore_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.errors import CHECK_UNREADABLE, OutputError, UsageError
from discmaker.format import canonical
from discmaker.format.manifest import MANIFEST_PATH, SIGNATURE_PATH, SIGNER_PATH, parse
from discmaker.sample import write_sample_study
from discmaker.ui.cli import main
from tests.conftest import Centre, author_disc, tree_digest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def small_disc(tmp_path_factory: pytest.TempPathFactory, centre: Centre) -> Path:
    """A folder disc whose CT images are manifest-only (too small to watermark)."""
    study = tmp_path_factory.mktemp("dest_study")
    write_sample_study(study, ct_slices=2, ct_size=128, mr_slices=2, mr_size=96)
    out = tmp_path_factory.mktemp("dest_disc") / "DISC"
    author_disc(centre, [study], out, format="folder", label="DEST")
    return out


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the disc is read at all."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("restore read the disc before refusing the output")

    monkeypatch.setattr(restore_mod, "check_and_restore", refuse)


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def _cli_restore(disc: Path, out: Path, centre: Centre) -> tuple[int, str]:
    console = Console(record=True, width=300)
    argv = ["restore", str(disc), "--out", str(out), "--trust", str(centre.cert_path)]
    code = main(argv, console=console)
    return code, console.export_text()


def _partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


# -- the destination ---------------------------------------------------------------------------


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("where", ["inside", "deep", "itself"])
def test_output_inside_the_source_is_refused(small_disc: Path, centre: Centre, where: str) -> None:
    before = tree_digest(small_disc)
    out = {
        "inside": small_disc / "restored",
        "deep": small_disc / "PT000000" / "new" / "restored",
        "itself": small_disc,
    }[where]
    with pytest.raises(UsageError, match="inside the disc being restored") as caught:
        restore_disc(small_disc, trust=_trust(centre), out=out)
    assert "choose an output outside it" in str(caught.value)
    assert caught.value.exit_code == 64  # like author's output inside its input
    assert tree_digest(small_disc) == before
    assert not _partials(small_disc) and not _partials(small_disc.parent)


@pytest.mark.usefixtures("no_work")
def test_output_through_a_symlink_into_the_source_is_refused(
    small_disc: Path, centre: Centre, tmp_path: Path
) -> None:
    link = tmp_path / "shortcut"
    link.symlink_to(small_disc, target_is_directory=True)
    with pytest.raises(UsageError, match="inside the disc being restored"):
        restore_disc(small_disc, trust=_trust(centre), out=link / "restored")
    # The source given through the link, the output by its real path: the same folder.
    with pytest.raises(UsageError, match="inside the disc being restored"):
        restore_disc(link, trust=_trust(centre), out=small_disc / "restored")
    assert not (small_disc / "restored").exists()


@pytest.mark.usefixtures("no_work")
def test_output_that_is_a_dangling_symlink_is_refused(
    small_disc: Path, centre: Centre, tmp_path: Path
) -> None:
    out = tmp_path / "restored"
    out.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link to a missing target") as caught:
        restore_disc(small_disc, trust=_trust(centre), out=out)
    assert "choose another output" in str(caught.value)
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()
    assert not _partials(tmp_path)


@pytest.mark.usefixtures("no_work")
def test_output_that_is_any_symlink_is_refused(
    small_disc: Path, centre: Centre, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    out = tmp_path / "restored"
    out.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="is a symbolic link"):
        restore_disc(small_disc, trust=_trust(centre), out=out)
    assert list(elsewhere.iterdir()) == []


def test_cli_refuses_bad_outputs_with_the_restore_contract_code(
    small_disc: Path, centre: Centre, tmp_path: Path
) -> None:
    """`restore` keeps the check contract (0-3): a usage or output error is 3, with the
    reason; the disc is not read and nothing is written."""
    code, text = _cli_restore(small_disc, small_disc / "restored", centre)
    assert code == CHECK_UNREADABLE
    assert "inside the disc being restored" in text and "Internal error" not in text
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    code, text = _cli_restore(small_disc, dangling, centre)
    assert code == CHECK_UNREADABLE and "symbolic link to a missing target" in text
    assert not (small_disc / "restored").exists() and not (tmp_path / "missing").exists()


def test_a_new_folder_beside_the_source_still_works(
    small_disc: Path, centre: Centre, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "via-link"
    link.symlink_to(real, target_is_directory=True)
    # A symlinked parent outside the source is fine: only the output itself must be real.
    result = restore_disc(small_disc, trust=_trust(centre), out=link / "restored")
    assert result.exit_code == 0 and len(result.restored) == 4
    assert (real / "restored").is_dir() and not (real / "restored").is_symlink()


# -- a re-signed disc whose image lacks its file meta UIDs -------------------------------------


def _strip_meta_and_resign(disc: Path, signer: Centre) -> str:
    """A manifest-only image loses its file meta UIDs; the manifest is re-signed to match."""
    images = parse((disc / MANIFEST_PATH).read_bytes()).images
    target = next(i.file_id for i in images if i.watermark != "embedded")
    path = disc / target
    ds = dcmread(path)
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        delattr(ds.file_meta, keyword)
    ds.save_as(path, enforce_file_format=False)
    pem = signer.cert_path.read_bytes()
    (disc / SIGNER_PATH).write_bytes(pem)
    doc = canonical.loads((disc / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    for entry in doc["files"]:
        data = {target: path.read_bytes(), SIGNER_PATH: pem}.get(entry["path"])
        if data is not None:
            entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    body = canonical.dumps(doc)
    (disc / MANIFEST_PATH).write_bytes(body)
    (disc / SIGNATURE_PATH).write_bytes(signing.sign(signer.identity.private_key, body))
    return target


@pytest.fixture
def stripped(tmp_path: Path, small_disc: Path, other_centre: Centre) -> tuple[Path, str]:
    disc = tmp_path / "copy"
    shutil.copytree(small_disc, disc)
    for p in disc.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return disc, _strip_meta_and_resign(disc, other_centre)


@pytest.mark.parametrize("trusted", ["original", "nobody"])
def test_untrusted_disc_with_image_lacking_file_meta_is_refused_not_a_crash(
    stripped: tuple[Path, str], centre: Centre, tmp_path: Path, trusted: str
) -> None:
    disc, target = stripped
    trust = _trust(centre) if trusted == "original" else TrustStore(tmp_path / "empty-store")
    result = restore_disc(disc, trust=trust, out=tmp_path / "restored")
    assert result.restored == () and target in result.refused
    assert result.exit_code in (1, 2)
    assert not (tmp_path / "restored").exists()  # nothing restored: no folder left behind
    console = Console(record=True, width=300)
    code = main(
        ["restore", str(disc), "--out", str(tmp_path / "cli"), "--trust", str(centre.cert_path)],
        console=console,
    )
    assert code == 1  # the images were sealed by a trusted sender: the manifest was replaced
    assert "Internal error" not in console.export_text()


def test_trusted_resigner_image_that_cannot_be_written_is_held_back(
    stripped: tuple[Path, str], other_centre: Centre, tmp_path: Path
) -> None:
    """Even when the re-signer is trusted, the file that cannot be a DICOM file again is held
    back and the other manifest-only image is restored."""
    disc, target = stripped
    result = restore_disc(
        disc, trust=_trust(other_centre), out=tmp_path / "restored", allow_partial=True
    )
    assert target in result.refused
    assert not (tmp_path / "restored" / target).exists()
    restored = [Path(p) for p in result.restored]
    assert len(restored) == 1 and all(p.is_file() for p in restored)
    assert os.path.commonpath([tmp_path / "restored", *restored]) == str(tmp_path / "restored")

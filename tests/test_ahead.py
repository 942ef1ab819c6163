"""Step 3 ahead of time (discmaker.author.ahead): a disc made from instances prepared as they
arrived is the disc the author makes from the files alone, byte for byte; a result is used
only while it is certainly what the author would make now."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker import errors
from discmaker.author.ahead import PreparedAhead
from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.sample import write_sample_study
from tests.conftest import Centre, author_disc


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    root = tmp_path / "study"
    write_sample_study(root, ct_slices=5, ct_size=128, mr_slices=4, mr_size=64)
    return sorted(p for p in root.rglob("*") if p.is_file())


def _submitted(tmp: Path, centre: Centre, files: list[Path], **kwargs: int) -> PreparedAhead:
    ahead = PreparedAhead(tmp / "ahead", centre.identity.private_key, workers=2, **kwargs)
    for path in files:
        ahead.submit(path)
    return ahead


def test_a_disc_from_instances_prepared_ahead_is_the_disc_made_without(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    plain = author_disc(centre, [study[0].parent.parent], tmp_path / "plain.iso", label="AHEAD")
    with _submitted(tmp_path, centre, study) as ahead:
        early = author_disc(
            centre, [study[0].parent.parent], tmp_path / "early.iso", label="AHEAD", ahead=ahead
        )
        assert ahead.used == len(study) == early.images
        assert not list(ahead.folder.iterdir())  # every result was taken
    assert (tmp_path / "early.iso").read_bytes() == (tmp_path / "plain.iso").read_bytes()
    assert plain.images == early.images


def test_a_file_changed_after_it_was_submitted_is_prepared_again(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    with _submitted(tmp_path, centre, study) as ahead:
        changed = dcmread(study[0])
        changed.StudyDescription = "CHANGED AFTER ARRIVAL"
        changed.save_as(study[0])  # a new file under the same name (another inode, size)
        out = tmp_path / "disc.iso"
        author_disc(centre, [study[0].parent.parent], out, ahead=ahead)
        assert ahead.used == len(study) - 1
    report = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0
    plain = tmp_path / "plain.iso"
    author_disc(centre, [study[0].parent.parent], plain)
    assert out.read_bytes() == plain.read_bytes()  # the new content, as the author makes it


def test_results_sealed_with_another_key_are_not_used(
    tmp_path: Path, centre: Centre, other_centre: Centre, study: list[Path]
) -> None:
    with _submitted(tmp_path, other_centre, study) as ahead:
        out = tmp_path / "disc.iso"
        author_disc(centre, [study[0].parent.parent], out, ahead=ahead)
        assert ahead.used == 0
        assert not list(ahead.folder.iterdir())
    report = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0


def test_a_file_that_fails_ahead_is_reported_by_the_author_as_always(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    broken = dcmread(study[0])
    broken.PixelData = broken.PixelData[:100]  # readable header, pixels cut short
    broken.save_as(study[0])
    with _submitted(tmp_path, centre, study) as ahead:
        with pytest.raises(errors.UnusableFileError) as caught:
            author_disc(centre, [study[0].parent.parent], tmp_path / "disc.iso", ahead=ahead)
        assert "Pixel Data" in str(caught.value)
        skipped = author_disc(
            centre, [study[0].parent.parent], tmp_path / "d2.iso", ahead=ahead, skip_unusable=True
        )
    assert [o.file for o in skipped.omitted] == [
        study[0].relative_to(study[0].parent.parent).as_posix()
    ]


def test_submitting_from_many_threads_and_forgetting_leaves_nothing(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    ahead = _submitted(tmp_path, centre, [])
    threads = [threading.Thread(target=ahead.submit, args=(p,)) for p in study * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(ahead.holds(p) for p in study)
    ahead.forget(study[:2])
    assert not ahead.holds(study[0]) and ahead.holds(study[2])
    ahead.close()
    assert not list(ahead.folder.iterdir())
    ahead.submit(study[0])  # closed: ignored
    assert not ahead.holds(study[0])


def test_it_holds_at_most_max_pending_files(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    with _submitted(tmp_path, centre, study, max_pending=3) as ahead:
        assert [ahead.holds(p) for p in study] == [True] * 3 + [False] * (len(study) - 3)


def test_a_result_left_by_an_earlier_process_is_removed_at_start_and_only_then(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    """start() (the folder's owner, under the station's lock) removes an earlier process's
    files; making or closing another object on the folder (a second station, refused at
    the lock) removes nothing of the running one's."""
    folder = tmp_path / "ahead"
    folder.mkdir()
    left = folder / "1-00000000.dcm"
    shutil.copy(study[0], left)
    with PreparedAhead(folder, centre.identity.private_key, workers=1) as running:
        assert left.exists()  # not the owner's start yet
        running.start()
        assert not left.exists()
        for path in study:
            running.submit(path)
        PreparedAhead(folder, centre.identity.private_key, workers=1).close()  # refused one
        out = tmp_path / "disc.iso"
        author_disc(centre, [study[0].parent.parent], out, ahead=running)
        assert running.used == len(study)
    assert not list(folder.iterdir())


def test_a_prepared_file_removed_meanwhile_is_prepared_again(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    with _submitted(tmp_path, centre, study) as ahead:
        assert ahead.take(study[0], ahead.key_id, tmp_path / "probe.dcm") is not None
        ahead.submit(study[0])
        while ahead.holds(study[0]) and not list(ahead.folder.glob("*.dcm")):
            time.sleep(0.01)
        for path in ahead.folder.glob("*.dcm"):
            path.unlink()  # every prepared file gone (by hand, say)
        out = tmp_path / "disc.iso"
        author_disc(centre, [study[0].parent.parent], out, ahead=ahead)
    plain = tmp_path / "plain.iso"
    author_disc(centre, [study[0].parent.parent], plain)
    assert out.read_bytes() == plain.read_bytes()


def test_workers_that_die_cost_the_sender_nothing_and_new_ones_take_over(
    tmp_path: Path, centre: Centre, study: list[Path]
) -> None:
    """A worker killed (out of memory, an operator): the files under way are prepared by the
    author instead, the next submit does not fail (a C-STORE answer depends on it) and new
    workers prepare what comes next."""
    with _submitted(tmp_path, centre, study[:2]) as ahead:
        pids = ahead.worker_pids()
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)  # the pool notices its workers are gone
        for path in study[2:]:
            ahead.submit(path)  # no exception, whatever the pool's state
        out = tmp_path / "disc.iso"
        author_disc(centre, [study[0].parent.parent], out, ahead=ahead)
        assert ahead.used >= 1  # the new workers' results were taken
    plain = tmp_path / "plain.iso"
    author_disc(centre, [study[0].parent.parent], plain)
    assert out.read_bytes() == plain.read_bytes()

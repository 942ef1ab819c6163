"""The checker in a multi-threaded host: concurrent checks never see each other's state.

Two centres with different keys each author a small disc; four threads then check both discs
at once, round after round, against trust stores that do and do not pin the signer. Each kind
of work is one helper (``_expect_*``) returning nothing and raising on a wrong result, so more
kinds (authoring in threads, say) are one more helper and one more entry in ``_round``.

A parser warning is a note about the file, never a verdict: the pytest configuration turns
warnings into errors, so these tests also prove that no pydicom warning escapes a check.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker.check.restore import restore_disc
from discmaker.check.verify import check_and_restore, check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.models import ImageStatus, Verdict
from discmaker.parallel import MIN_JOBS_FOR_POOL
from discmaker.sample import SamplePatient, write_sample_study
from tests.conftest import Centre, author_disc

THREADS = 4
ROUNDS = 20
POOL_ROUNDS = frozenset({7, 15})  # rounds where two checks use worker processes (workers=2)
# 20 characters, longer than SH allows, so pydicom warns when it converts the value; one of
# them not ASCII, so the checker has pydicom convert it (plain ASCII text is read raw)
ODD_ACCESSION = "ACC-\u00c9" + "7" * 15

Task = Callable[[], None]


@dataclass(frozen=True)
class Disc:
    path: Path
    centre: Centre  # who signed it

    @property
    def fingerprint(self) -> str:
        return signing.fingerprint(self.centre.identity.certificate)


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def _small_study(root: Path, patient: SamplePatient | None = None) -> Path:
    # Enough images for the process pool; CT at this size is manifest-only, MR watermarked.
    write_sample_study(root, ct_slices=4, ct_size=128, mr_slices=4, mr_size=96, patient=patient)
    return root


def _author(centre: Centre, study: Path, out: Path) -> Disc:
    author_disc(centre, [study], out, format="folder", label="THREADS")
    return Disc(out, centre)


@pytest.fixture(scope="module")
def disc_a(tmp_path_factory: pytest.TempPathFactory, centre: Centre) -> Disc:
    study = _small_study(tmp_path_factory.mktemp("study_a"))
    return _author(centre, study, tmp_path_factory.mktemp("disc_a") / "DISC")


@pytest.fixture(scope="module")
def disc_b(tmp_path_factory: pytest.TempPathFactory, other_centre: Centre) -> Disc:
    patient = SamplePatient(name="OTHER^PATIENT", patient_id="DM-000002", birth_date="19800202")
    study = _small_study(tmp_path_factory.mktemp("study_b"), patient)
    return _author(other_centre, study, tmp_path_factory.mktemp("disc_b") / "DISC")


@pytest.fixture(scope="module")
def odd_disc(tmp_path_factory: pytest.TempPathFactory, centre: Centre) -> Disc:
    """A disc whose watermarked images carry an Accession Number too long for its VR (SH).

    Such files exist in the wild and are valid enough to sign; pydicom warns each time it
    reads the value. Authoring is not what is tested here, so its warnings are ignored (no
    other thread runs while a fixture is built).
    """
    study = _small_study(tmp_path_factory.mktemp("study_odd"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted((study / "mr").iterdir()):
            ds = dcmread(path)
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.AccessionNumber = ODD_ACCESSION
            ds.save_as(path)
        return _author(centre, study, tmp_path_factory.mktemp("disc_odd") / "DISC")


# -- one helper per kind of work: each raises AssertionError on a wrong result ---------------


def _expect_verified(disc: Disc, workers: int = 1) -> None:
    report = check_disc(disc.path, trust=_trust(disc.centre), workers=workers)
    assert report.verdict is Verdict.VERIFIED, (report.findings, report.images)
    assert report.findings == ()
    assert report.signer is not None and report.signer.trusted
    assert report.signer.fingerprint == disc.fingerprint
    assert {v.status for v in report.images} == {ImageStatus.OK, ImageStatus.MANIFEST_ONLY}


def _expect_untrusted(disc: Disc, trust_only: Centre, workers: int = 1) -> None:
    report = check_disc(disc.path, trust=_trust(trust_only), workers=workers)
    assert report.verdict is Verdict.NOT_VERIFIABLE, (report.findings, report.images)
    assert report.exit_code == 2
    assert report.signer is not None and not report.signer.trusted
    assert report.signer.fingerprint == disc.fingerprint


def _expect_restored(disc: Disc, out: Path, workers: int = 1) -> None:
    result = restore_disc(disc.path, trust=_trust(disc.centre), out=out, workers=workers)
    assert result.report.verdict is Verdict.VERIFIED
    assert result.refused == ()
    assert len(result.restored) == len(result.report.images)
    shutil.rmtree(out)


def _expect_notes_not_verdicts(disc: Disc, workers: int = 1) -> None:
    """The odd disc verifies; each odd image has its warning as a note, the others none."""
    report, outcomes = check_and_restore(disc.path, trust=_trust(disc.centre), workers=workers)
    assert report.verdict is Verdict.VERIFIED, (report.findings, report.images)
    assert report.signer is not None and report.signer.fingerprint == disc.fingerprint
    for outcome in outcomes:
        if outcome.verdict.status is ImageStatus.OK:  # the MR images, where the oddity is
            assert any("maximum length of 16" in n for n in outcome.notes), outcome.notes
        else:
            assert outcome.notes == (), outcome.notes


def _run_concurrently(tasks: Sequence[Task], threads: int = THREADS) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()  # re-raises the first wrong result, with its traceback


def _round(n: int, a: Disc, b: Disc, odd: Disc, scratch: Path) -> list[Task]:
    """One round's work; in a pool round the trusted checks run in worker processes while
    the other checks run in this process's threads."""
    pool = 2 if n in POOL_ROUNDS else 1
    tasks: list[Task] = [
        lambda: _expect_verified(a, workers=pool),
        lambda: _expect_verified(b, workers=pool),
        lambda: _expect_untrusted(a, trust_only=b.centre),
        lambda: _expect_untrusted(b, trust_only=a.centre),
        lambda: _expect_notes_not_verdicts(odd),
    ]
    if n % 5 == 0:
        tasks.append(lambda: _expect_restored(a, scratch / f"a{n}"))
        tasks.append(lambda: _expect_restored(b, scratch / f"b{n}"))
    return tasks


# -- tests -------------------------------------------------------------------------------------


def test_discs_are_big_enough_for_the_pool(disc_a: Disc, disc_b: Disc) -> None:
    for disc in (disc_a, disc_b):
        report = check_disc(disc.path, trust=_trust(disc.centre))
        assert len(report.images) >= MIN_JOBS_FOR_POOL


def test_concurrent_checks_keep_their_own_keys_and_discs(
    disc_a: Disc, disc_b: Disc, odd_disc: Disc, tmp_path: Path
) -> None:
    assert disc_a.fingerprint != disc_b.fingerprint
    for n in range(ROUNDS):
        _run_concurrently(_round(n, disc_a, disc_b, odd_disc, tmp_path))


def test_a_parser_warning_is_a_note_not_a_verdict(odd_disc: Disc) -> None:
    # pytest runs this with warnings as errors: a warning that escaped would fail it.
    _expect_notes_not_verdicts(odd_disc)


def test_no_parser_warning_reaches_the_host(odd_disc: Disc) -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _expect_notes_not_verdicts(odd_disc)
    assert [str(w.message) for w in shown] == []


def test_debug_log_names_steps_and_files_never_patient_data(
    disc_b: Disc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="discmaker.check.verify")
    report, _ = check_and_restore(disc_b.path, trust=_trust(disc_b.centre))
    text = "\n".join(r.getMessage() for r in caplog.records)
    for step in ("step 1", "step 2", "steps 3-4", "step 5"):
        assert step in text
    assert all(f"image {v.path}: {v.status.value} in " in text for v in report.images)
    secrets = {"OTHER", "PATIENT", "DM-000002", "19800202"}
    secrets |= {v.sop_instance_uid for v in report.images} | {v.series_uid for v in report.images}
    assert not {s for s in secrets if s and s in text}

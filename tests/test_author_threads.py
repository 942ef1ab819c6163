"""Authoring in a multi-threaded host: concurrent runs never see each other's key or state.

Two centres with different keys author discs at the same time, four threads at once, round
after round: ISO images and folders, in the calling thread (``workers=1``) and, in a couple of
rounds, with worker processes (``workers=2`` over enough images for the pool). Every disc must
be signed by its own centre: ``DISCSIG/SIGNER.PEM`` is that centre's certificate, the manifest
signature verifies with it, every watermark names that centre's key, and the library's own
checker, trusting that centre alone, says VERIFIED. The checks run in the threads too, while
other threads author.

The pytest configuration turns warnings into errors; one study carries values pydicom warns
about, so these tests also prove that its warnings reach the author's result as notes about
the file, not the host.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives import serialization
from pydicom import dcmread

from discmaker.author.create import AuthorRequest, AuthorResult, author
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc.source import open_source
from discmaker.format import manifest
from discmaker.format.layout import PRIVATE_CREATOR, PRIVATE_GROUP, WATERMARK_FORMAT
from discmaker.models import Verdict
from discmaker.parallel import MIN_JOBS_FOR_POOL
from discmaker.sample import SamplePatient, write_sample_study
from tests.conftest import FIXED_TIME, Centre

THREADS = 4
ROUNDS = 20
POOL_ROUNDS = frozenset({6, 13})  # rounds whose discs are prepared by worker processes
ODD_ACCESSION = "ACC-" + "7" * 16  # 20 characters: longer than SH allows, so pydicom warns
MAX_FILE = 64 * 1024 * 1024

Format = Literal["iso", "folder"]


@dataclass(frozen=True)
class Studies:
    small_a: Path  # 4 images of patient A
    small_b: Path  # 4 images of patient B
    odd: Path  # 4 images, the MR ones with an over-long Accession Number
    pool: Path  # enough images for the worker-process pool


@dataclass(frozen=True)
class Job:
    centre: Centre
    study: Path
    out: Path
    format: Format
    workers: int


def _study(root: Path, *, slices: int = 2, patient: SamplePatient | None = None) -> Path:
    # MR at 96 px carries the watermark; CT at 128 px is protected by the manifest only.
    write_sample_study(
        root, ct_slices=slices, ct_size=128, mr_slices=slices, mr_size=96, patient=patient
    )
    return root


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Studies:
    patient_b = SamplePatient(name="OTHER^PATIENT", patient_id="DM-000002", birth_date="19800202")
    odd = _study(tmp_path_factory.mktemp("odd"))
    with warnings.catch_warnings():  # making the odd files is not under test (one thread)
        warnings.simplefilter("ignore")
        for path in sorted((odd / "mr").iterdir()):
            ds = dcmread(path)
            ds.AccessionNumber = ODD_ACCESSION
            ds.save_as(path)
    return Studies(
        small_a=_study(tmp_path_factory.mktemp("small_a")),
        small_b=_study(tmp_path_factory.mktemp("small_b"), patient=patient_b),
        odd=odd,
        pool=_study(tmp_path_factory.mktemp("pool"), slices=MIN_JOBS_FOR_POOL // 2),
    )


def _centre_pem(centre: Centre) -> bytes:
    return centre.identity.certificate.public_bytes(serialization.Encoding.PEM)


def _centre_key_id(centre: Centre) -> str:
    return signing.key_id(centre.identity.private_key.public_key()).hex().upper()


def _expect_signed_by(job: Job, result: AuthorResult) -> None:
    """The disc at ``job.out`` is the one ``job.centre`` signed, every part of it."""
    cert = job.centre.identity.certificate
    assert result.fingerprint == signing.fingerprint(cert), job
    with open_source(job.out) as disc:
        assert disc.read_bytes(manifest.SIGNER_PATH, limit=MAX_FILE) == _centre_pem(job.centre)
        signed = disc.read_bytes(manifest.MANIFEST_PATH, limit=MAX_FILE)
        signature = disc.read_bytes(manifest.SIGNATURE_PATH, limit=MAX_FILE)
        signing.verify(cert, signature, signed, what=f"the manifest of {job.out}")
        images = manifest.parse(signed).images
        embedded = [i for i in images if i.watermark == "embedded"]
        assert embedded, "no image carries a watermark: the key id is not tested"
        for image in embedded:
            ds = dcmread(io.BytesIO(disc.read_bytes(image.file_id, limit=MAX_FILE)))
            block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
            assert block[0x01].value == WATERMARK_FORMAT
            assert block[0x02].value == _centre_key_id(job.centre), (job, image.file_id)
    report = check_disc(job.out, trust=TrustStore.from_paths([job.centre.cert_path]), workers=1)
    assert report.verdict is Verdict.VERIFIED, (job, report.findings, report.images)
    assert report.signer is not None and report.signer.trusted
    assert report.signer.fingerprint == signing.fingerprint(cert)


def _author(centre: Centre, study: Path, out: Path, fmt: Format, workers: int) -> AuthorResult:
    request = AuthorRequest(
        inputs=(study,),
        out=out,
        key=centre.identity.private_key,
        cert=centre.identity.certificate,
        format=fmt,
        label="THREADS",
        timestamp=FIXED_TIME,
        workers=workers,
    )
    return author(request)


def _author_and_check(job: Job) -> AuthorResult:
    result = _author(job.centre, job.study, job.out, job.format, job.workers)
    _expect_signed_by(job, result)
    return result


def _round(n: int, a: Centre, b: Centre, studies: Studies, scratch: Path) -> list[Job]:
    """Four discs at once: each centre signs a study of each patient, in both formats."""
    fmt: Format = "iso" if n % 2 else "folder"
    other: Format = "folder" if fmt == "iso" else "iso"
    if n in POOL_ROUNDS:
        plan = [(a, studies.pool, fmt), (b, studies.pool, other), (a, studies.small_b, other)]
        plan.append((b, studies.odd, fmt))
        workers = 2
    else:
        plan = [(a, studies.small_a, fmt), (b, studies.small_b, fmt), (a, studies.odd, other)]
        plan.append((b, studies.small_a, other))
        workers = 1
    return [
        Job(centre, study, scratch / f"r{n:02d}_{k}{'.iso' if f == 'iso' else ''}", f, workers)
        for k, (centre, study, f) in enumerate(plan)
    ]


def _run_all(tasks: list[Callable[[], AuthorResult]]) -> list[AuthorResult]:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]


def test_two_centres_author_concurrently(
    centre: Centre, other_centre: Centre, studies: Studies, tmp_path: Path
) -> None:
    assert _centre_key_id(centre) != _centre_key_id(other_centre)
    for n in range(ROUNDS):
        jobs = _round(n, centre, other_centre, studies, tmp_path)
        results = _run_all([partial(_author_and_check, job) for job in jobs])
        for job, result in zip(jobs, results, strict=True):
            if job.study == studies.odd:
                assert any("VR SH" in note for note in result.input_notes), result.input_notes
                assert all(note.startswith("mr/") for note in result.input_notes), result
            else:
                assert result.input_notes == (), (job, result.input_notes)


def test_notes_name_the_file_and_do_not_escape(
    centre: Centre, studies: Studies, tmp_path: Path
) -> None:
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        result = _author(centre, studies.odd, tmp_path / "ODD", "folder", 1)
    assert escaped == []
    noted = {note.split(": ", 1)[0] for note in result.input_notes}
    assert noted == {p.relative_to(studies.odd).as_posix() for p in (studies.odd / "mr").iterdir()}
    assert any("do not follow the DICOM rules" in note for note in result.notes)

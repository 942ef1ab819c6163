"""The streamed manifest (:func:`manifest.chunks`) is byte for byte the whole-document one.

The oracle is the manifest as discmaker wrote it before it was streamed: the whole document
as Python objects, then :func:`canonical.dumps` (kept here as ``_whole_document``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from discmaker import APP_NAME, __version__
from discmaker.errors import InternalError
from discmaker.format import manifest
from discmaker.format.canonical import dumps
from discmaker.format.identity import (
    FORMAT as IDENTITY_FORMAT,
)
from discmaker.format.identity import (
    IDENTITY_KEYWORDS,
    PATIENT_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
)
from discmaker.format.manifest import (
    IMAGE_LEVEL_KEYWORDS,
    DiscInfo,
    FileEntry,
    ImageEntry,
    IsoInfo,
    OmittedFile,
    SetMember,
)


def _whole_group(images: Sequence[ImageEntry]) -> list[dict[str, Any]]:
    """The patients array as the manifest built it before streaming."""
    patients: dict[tuple[str, ...], dict[str, Any]] = {}
    for img in images:
        pkey = tuple(img.identity[k] for k in PATIENT_KEYWORDS)
        patient = patients.setdefault(
            pkey, {"identity": {k: img.identity[k] for k in PATIENT_KEYWORDS}, "studies": {}}
        )
        skey = tuple(img.identity[k] for k in STUDY_KEYWORDS)
        study = patient["studies"].setdefault(
            skey, {"identity": {k: img.identity[k] for k in STUDY_KEYWORDS}, "series": {}}
        )
        sekey = tuple(img.identity[k] for k in SERIES_KEYWORDS)
        series = study["series"].setdefault(
            sekey, {"identity": {k: img.identity[k] for k in SERIES_KEYWORDS}, "images": []}
        )
        series["images"].append(
            {
                "file": img.file_id,
                "sop_class_uid": img.sop_class_uid,
                "sop_instance_uid": img.sop_instance_uid,
                "transfer_syntax": img.transfer_syntax,
                "identity": {k: img.identity[k] for k in IMAGE_LEVEL_KEYWORDS},
                "identity_sha256": img.identity_sha256,
                "watermark": {"status": img.watermark, "reason": img.watermark_reason},
                "frames": img.frames,
                "encoding": img.encoding,
                "source_transfer_syntax": img.source_syntax,
                "dicomdir_placeholders": list(img.invented),
            }
        )
    out = []
    for patient in patients.values():
        studies = []
        for study in patient["studies"].values():
            study["series"] = list(study["series"].values())
            studies.append(study)
        patient["studies"] = studies
        out.append(patient)
    return out


def _whole_document(**kw: Any) -> bytes:
    """The manifest bytes as discmaker wrote them before streaming."""
    disc, dicomdir, iso, omitted = kw["disc"], kw["dicomdir"], kw.get("iso"), kw.get("omitted")
    doc: dict[str, Any] = {
        "format": manifest.FORMAT,
        "format_version": manifest.FORMAT_VERSION,
        "identity_format": IDENTITY_FORMAT,
        "software": {"name": APP_NAME, "version": __version__},
        "created": kw["created"],
        "creator": {
            "institution": kw["institution"],
            "signer_subject": kw["signer_subject"],
            "signer_fingerprint": kw["signer_fingerprint"],
        },
        "disc": {
            "fileset_id": disc.fileset_id,
            "medium": disc.medium,
            "number": disc.number,
            "count": disc.count,
            "set_id": disc.set_id,
            "set": [
                {"number": m.number, "fileset_id": m.fileset_id, "images": m.images}
                for m in disc.members
            ],
        },
        "dicomdir": {"path": dicomdir.path, "size": dicomdir.size, "sha256": dicomdir.sha256},
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256}
            for f in sorted(kw["files"], key=lambda f: f.path)
        ],
        "patients": _whole_group(kw["images"]),
    }
    if iso is not None:
        doc["iso"] = {
            "layout": iso.layout,
            "volume_id": iso.volume_id,
            "application_id": iso.application_id,
            "publisher": iso.publisher,
            "timestamp": iso.timestamp,
            "volume_set": list(iso.volume_set),
        }
    if omitted:
        doc["omitted"] = [{"file": o.file, "reason": o.reason} for o in omitted]
    return dumps(doc)


def _identity(patient: int, study: int, series: int, image: int) -> dict[str, str]:
    values = {k: f"{k}-{patient}" for k in PATIENT_KEYWORDS}
    values |= {k: f"{k}-{patient}.{study}" for k in STUDY_KEYWORDS}
    values |= {k: f"{k}-{patient}.{study}.{series}" for k in SERIES_KEYWORDS}
    values |= {k: f"{k}-{image}" for k in IMAGE_LEVEL_KEYWORDS}
    values["PatientName"] = ["Müller^Jürgen", "山田^太郎", 'quote"back\\slash'][patient % 3]
    return {k: values[k] for k in IDENTITY_KEYWORDS}


def _image(n: int, identity: dict[str, str]) -> ImageEntry:
    return ImageEntry(
        file_id=f"PT000000/ST000000/SE000000/IM{n:06d}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"1.2.3.{n}",
        transfer_syntax="1.2.840.10008.1.2.1",
        identity=identity,
        identity_sha256=f"{n:064x}",
        watermark="embedded" if n % 2 else "none",
        watermark_reason="" if n % 2 else "too small \u00e9\u2028",
        frames=1 + n % 3,
        encoding=("native", "decompressed", "lossy-carried")[n % 3],
        source_syntax="1.2.840.10008.1.2.4.70",
        invented=("StudyDate", "SeriesNumber")[: n % 3],
    )


def _interleaved(count: int) -> list[ImageEntry]:
    """Images of 3 patients, 2 studies and 2 series each, interleaved, one slice of a study
    with its own Study Date (grouped apart though its UID is the same)."""
    images = []
    for n in range(count):
        identity = _identity(n % 3, n // 3 % 2, n // 6 % 2, n)
        if n == 7:
            identity = {**identity, STUDY_KEYWORDS[-1]: "another value"}
        images.append(_image(n, identity))
    return images


def _arguments(images: Sequence[ImageEntry], **extra: Any) -> dict[str, Any]:
    files = [
        FileEntry(path=i.file_id, size=1000 + n, sha256="ab" * 32) for n, i in enumerate(images)
    ]
    files.append(FileEntry(path="README.TXT", size=7, sha256="cd" * 32))
    return {
        "created": "2026-12-04T02:00:00Z",
        "institution": "Klinik Süd",
        "signer_subject": "CN=Radiologie",
        "signer_fingerprint": "ef" * 32,
        "disc": DiscInfo(
            fileset_id="DISC1",
            medium="dvd",
            number=1,
            count=2,
            set_id="12" * 32,
            members=(SetMember(1, "DISC1", len(images)), SetMember(2, "DISC2", 3)),
        ),
        "dicomdir": FileEntry(path="DICOMDIR", size=1234, sha256="01" * 32),
        "files": list(reversed(files)),
        "images": images,
        **extra,
    }


_ISO = IsoInfo(
    layout=1,
    volume_id="DISC1",
    application_id="discmaker 1",
    publisher="KLINIK SUD",
    timestamp="2026-12-04T02:00:00Z",
    volume_set=(1, 2),
)
_OMITTED = (OmittedFile(file="a/b.dcm", reason="not DICOM"), OmittedFile(file="ç", reason="x"))


@pytest.mark.parametrize("count", [1, 2, 13, 60])
@pytest.mark.parametrize(
    "extra",
    [{}, {"iso": _ISO}, {"omitted": _OMITTED}, {"iso": _ISO, "omitted": _OMITTED}],
    ids=["folder", "iso", "omitted", "iso-omitted"],
)
def test_streamed_manifest_is_the_whole_document(count: int, extra: dict[str, Any]) -> None:
    args = _arguments(_interleaved(count), **extra)
    expected = _whole_document(**args)
    assert b"".join(manifest.chunks(**args)) == expected
    assert manifest.build(**args) == expected
    parsed = manifest.parse(expected).images  # in the order of the hierarchy

    def by_file(images: Sequence[ImageEntry]) -> list[ImageEntry]:
        return sorted(images, key=lambda i: i.file_id)

    assert by_file(parsed) == by_file(args["images"])


def test_no_images_no_members() -> None:
    args = _arguments([])
    args["disc"] = DiscInfo(fileset_id="X", medium="cd")
    assert manifest.build(**args) == _whole_document(**args)


def test_a_float_is_still_refused() -> None:
    images = [_image(0, _identity(0, 0, 0, 0))]
    args = _arguments(images)
    args["dicomdir"] = FileEntry(path="DICOMDIR", size=1.5, sha256="01" * 32)  # type: ignore[arg-type]
    with pytest.raises(InternalError):
        manifest.build(**args)

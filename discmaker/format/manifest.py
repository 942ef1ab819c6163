"""The disc manifest: what is on the disc, hash by hash, and how it hangs together.

``DISCSIG/MANIFEST.JSN`` is canonical JSON (sorted keys, UTF-8, integers only), signed as raw
bytes into ``DISCSIG/MANIFEST.SIG``. It lists every file on the disc except itself and its
signature, with size and SHA-256, the DICOMDIR's hash, and the patient / study / series /
image hierarchy with UIDs, File IDs, identity attributes and the watermark status of each
image. The checker trusts nothing on the disc that the manifest does not vouch for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from discmaker import APP_NAME, __version__
from discmaker.errors import DiscError
from discmaker.format.canonical import dumps, loads
from discmaker.format.identity import (
    FORMAT as IDENTITY_FORMAT,
)
from discmaker.format.identity import (
    IDENTITY_KEYWORDS,
    INSTANCE_KEYWORDS,
    PATIENT_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    Identity,
)

FORMAT = "discmaker-manifest"
FORMAT_VERSION = 1
SECURITY_DIR = "DISCSIG"
MANIFEST_PATH = f"{SECURITY_DIR}/MANIFEST.JSN"
SIGNATURE_PATH = f"{SECURITY_DIR}/MANIFEST.SIG"
SIGNER_PATH = f"{SECURITY_DIR}/SIGNER.PEM"
# Every file the manifest lists, as `sha256sum -c` reads it: a clinic without discmaker can
# still compare the disc with what was signed (the list itself is in the manifest).
CHECKSUMS_PATH = f"{SECURITY_DIR}/SHA256.TXT"
MAX_OMITTED = 10_000  # left-out input files a manifest may name
MAX_SET_DISCS = 999  # discs in one set: far past any study; bounds what "disc k of n" makes us do
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

IMAGE_LEVEL_KEYWORDS = tuple(
    k for k in IDENTITY_KEYWORDS if k not in PATIENT_KEYWORDS + STUDY_KEYWORDS + SERIES_KEYWORDS
)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file the manifest vouches for: its path on the disc, size and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class OmittedFile:
    """An input file the author left out because it could not go on a disc."""

    file: str  # its path in the input folder the author was given
    reason: str


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One DICOM instance on the disc, as the author wrote it."""

    file_id: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    identity: Mapping[str, str]  # every keyword of IDENTITY_KEYWORDS
    identity_sha256: str
    watermark: str  # "embedded" or "none"
    watermark_reason: str  # why not, when "none"
    frames: int
    encoding: str  # "native", "decompressed", "lossy-carried"
    source_syntax: str
    invented: tuple[str, ...] = ()  # record keys given placeholders or made to conform


@dataclass(frozen=True)
class SetMember:
    """One disc of a multi-disc set, as every disc of the set lists it."""

    number: int
    fileset_id: str
    images: int


@dataclass(frozen=True)
class DiscInfo:
    fileset_id: str
    medium: str
    number: int = 1
    count: int = 1
    set_id: str = ""  # the same on every disc of one set (a digest of the whole job)
    members: tuple[SetMember, ...] = ()  # every disc of the set, this one included


@dataclass(frozen=True)
class IsoInfo:
    """How the ISO image was written, signed so that a checker can rebuild it.

    discmaker's ISO images are reproducible (:mod:`discmaker.disc.iso`): the same files and
    these fields give the same bytes. A checker rebuilds the image a disc should be and
    compares the medium with it, so that no other view of it (UDF, a second session, Joliet,
    Rock Ridge, path tables, boot records, data past the volume) can differ unseen. Absent
    on a disc written as a folder: nobody can know how it was later put on a disc.
    """

    layout: int  # ISO_LAYOUT: how directories, names and dates are laid out
    volume_id: str
    application_id: str
    publisher: str
    timestamp: str  # every date on the image, ISO 8601 UTC ("2026-01-02T10:00:00Z")
    volume_set: tuple[int, int]  # (disc number, discs in the set)


@dataclass(frozen=True)
class Manifest:
    created: str
    software: str
    software_version: str
    institution: str
    signer_subject: str
    signer_fingerprint: str
    disc: DiscInfo
    dicomdir: FileEntry
    files: tuple[FileEntry, ...]
    images: tuple[ImageEntry, ...]
    iso: IsoInfo | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    omitted: tuple[OmittedFile, ...] = ()


# The grouping of the images: patient -> study -> series -> the indexes of its images, each
# level with the identity values of its first image, in the order the images come.
_Series = tuple[dict[str, str], list[int]]
_Study = tuple[dict[str, str], dict[tuple[str, ...], _Series]]
_Patient = tuple[dict[str, str], dict[tuple[str, ...], _Study]]


def _level(identity: Mapping[str, str], keywords: Sequence[str]) -> tuple[str, ...]:
    return tuple(identity[k] for k in keywords)


def _group(images: Sequence[ImageEntry]) -> list[_Patient]:
    """The hierarchy of ``images`` as indexes: a few small dicts per series, one int per image."""
    patients: dict[tuple[str, ...], _Patient] = {}
    for index, img in enumerate(images):
        ident = img.identity
        patient = patients.setdefault(
            _level(ident, PATIENT_KEYWORDS), ({k: ident[k] for k in PATIENT_KEYWORDS}, {})
        )
        # Group by every value of the level, not just its UID: when the images of one study
        # disagree (another Study Date on one slice), each keeps its own values here.
        study = patient[1].setdefault(
            _level(ident, STUDY_KEYWORDS), ({k: ident[k] for k in STUDY_KEYWORDS}, {})
        )
        series = study[1].setdefault(
            _level(ident, SERIES_KEYWORDS), ({k: ident[k] for k in SERIES_KEYWORDS}, [])
        )
        series[1].append(index)
    return list(patients.values())


def _image(img: ImageEntry) -> dict[str, Any]:
    """The manifest entry of one image."""
    return {
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


def _value(obj: Any) -> bytes:
    """``obj`` as canonical JSON inside a larger document (no final newline)."""
    return dumps(obj)[:-1]


def _array(items: Iterable[Iterable[bytes]]) -> Iterator[bytes]:
    """A JSON array of the items, each given as its pieces."""
    yield b"["
    for n, item in enumerate(items):
        if n:
            yield b","
        yield from item
    yield b"]"


def _object(members: Mapping[str, Iterable[bytes]]) -> Iterator[bytes]:
    """A JSON object of the members, each value given as its pieces, in canonical key order."""
    yield b"{"
    for n, key in enumerate(sorted(members)):
        yield (b"," if n else b"") + _value(key) + b":"
        yield from members[key]
    yield b"}"


def _patients(images: Sequence[ImageEntry]) -> Iterator[bytes]:
    """The ``patients`` array, one image entry at a time."""

    def series(level: _Series) -> Iterator[bytes]:
        yield from _object(
            {
                "identity": (_value(level[0]),),
                "images": _array((_value(_image(images[i])),) for i in level[1]),
            }
        )

    def study(level: _Study) -> Iterator[bytes]:
        yield from _object(
            {
                "identity": (_value(level[0]),),
                "series": _array(series(s) for s in level[1].values()),
            }
        )

    def patient(level: _Patient) -> Iterator[bytes]:
        yield from _object(
            {
                "identity": (_value(level[0]),),
                "studies": _array(study(s) for s in level[1].values()),
            }
        )

    yield from _array(patient(p) for p in _group(images))


def chunks(
    *,
    created: str,
    institution: str,
    signer_subject: str,
    signer_fingerprint: str,
    disc: DiscInfo,
    dicomdir: FileEntry,
    files: Sequence[FileEntry],
    images: Sequence[ImageEntry],
    iso: IsoInfo | None = None,
    omitted: Sequence[OmittedFile] = (),
) -> Iterator[bytes]:
    """The canonical manifest bytes piece by piece (an entry of ``files`` or ``images`` at a
    time), so that the document is never in memory as Python objects: joined, the pieces are
    exactly :func:`build`'s bytes. ``images`` is read twice (grouped, then written)."""
    members: dict[str, Iterable[bytes]] = {
        "format": (_value(FORMAT),),
        "format_version": (_value(FORMAT_VERSION),),
        "identity_format": (_value(IDENTITY_FORMAT),),
        "software": (_value({"name": APP_NAME, "version": __version__}),),
        "created": (_value(created),),
        "creator": (
            _value(
                {
                    "institution": institution,
                    "signer_subject": signer_subject,
                    "signer_fingerprint": signer_fingerprint,
                }
            ),
        ),
        "disc": (
            _value(
                {
                    "fileset_id": disc.fileset_id,
                    "medium": disc.medium,
                    "number": disc.number,
                    "count": disc.count,
                    "set_id": disc.set_id,
                    "set": [
                        {"number": m.number, "fileset_id": m.fileset_id, "images": m.images}
                        for m in disc.members
                    ],
                }
            ),
        ),
        "dicomdir": (_value(_file(dicomdir)),),
        "files": _array((_value(_file(f)),) for f in sorted(files, key=lambda f: f.path)),
        "patients": _patients(images),
    }
    if iso is not None:
        members["iso"] = (
            _value(
                {
                    "layout": iso.layout,
                    "volume_id": iso.volume_id,
                    "application_id": iso.application_id,
                    "publisher": iso.publisher,
                    "timestamp": iso.timestamp,
                    "volume_set": list(iso.volume_set),
                }
            ),
        )
    if omitted:
        members["omitted"] = (_value([{"file": o.file, "reason": o.reason} for o in omitted]),)
    yield from _object(members)
    yield b"\n"


def _file(entry: FileEntry) -> dict[str, Any]:
    return {"path": entry.path, "size": entry.size, "sha256": entry.sha256}


def build(
    *,
    created: str,
    institution: str,
    signer_subject: str,
    signer_fingerprint: str,
    disc: DiscInfo,
    dicomdir: FileEntry,
    files: Sequence[FileEntry],
    images: Sequence[ImageEntry],
    iso: IsoInfo | None = None,
    omitted: Sequence[OmittedFile] = (),
) -> bytes:
    """The canonical manifest bytes (what gets signed): :func:`chunks`, joined."""
    return b"".join(
        chunks(
            created=created,
            institution=institution,
            signer_subject=signer_subject,
            signer_fingerprint=signer_fingerprint,
            disc=disc,
            dicomdir=dicomdir,
            files=files,
            images=images,
            iso=iso,
            omitted=omitted,
        )
    )


# -- parsing a received manifest (hostile input) -------------------------------------------


def _req(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise DiscError(f"The manifest is malformed: {where} has no {key!r}.")
    value = obj[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise DiscError(f"The manifest is malformed: {where}.{key} is not a {kind.__name__}.")
    return value


def _disc_number(disc: Mapping[str, Any], key: str) -> int:
    """A disc number or count of a set: 1 .. MAX_SET_DISCS (a hostile manifest could ask for
    two billion discs, and the checker lists the missing ones)."""
    value: int = _req(disc, key, int, "disc")
    if not 1 <= value <= MAX_SET_DISCS:
        raise DiscError(
            f"The manifest is malformed: disc.{key} is {value}, not 1 to {MAX_SET_DISCS}."
        )
    return value


def _file_entry(obj: Any, where: str) -> FileEntry:
    size = _req(obj, "size", int, where)
    digest = _req(obj, "sha256", str, where)
    if size < 0 or len(digest) != 64:
        raise DiscError(f"The manifest is malformed: {where} has an impossible size or hash.")
    return FileEntry(path=_req(obj, "path", str, where), size=size, sha256=digest.lower())


def _identity(obj: Any, keywords: Sequence[str], where: str) -> dict[str, str]:
    ident = _req(obj, "identity", dict, where)
    return {k: str(_req(ident, k, str, f"{where}.identity")) for k in keywords}


def parse(data: bytes) -> Manifest:
    doc = loads(data, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DiscError("DISCSIG/MANIFEST.JSN is not a discmaker manifest.")
    version = _req(doc, "format_version", int, "manifest")
    if version != FORMAT_VERSION:
        raise DiscError(
            f"The manifest has format version {version}; this discmaker reads version "
            f"{FORMAT_VERSION}. Update discmaker."
        )
    software = _req(doc, "software", dict, "manifest")
    creator = _req(doc, "creator", dict, "manifest")
    disc = _req(doc, "disc", dict, "manifest")
    images: list[ImageEntry] = []
    for p, patient in enumerate(_req(doc, "patients", list, "manifest")):
        pid = _identity(patient, PATIENT_KEYWORDS, f"patients[{p}]")
        for s, study in enumerate(_req(patient, "studies", list, f"patients[{p}]")):
            sid = _identity(study, STUDY_KEYWORDS, f"patients[{p}].studies[{s}]")
            for r, series in enumerate(_req(study, "series", list, "study")):
                rid = _identity(series, SERIES_KEYWORDS, f"series[{r}]")
                for i, img in enumerate(_req(series, "images", list, "series")):
                    where = f"series[{r}].images[{i}]"
                    iid = _identity(img, IMAGE_LEVEL_KEYWORDS, where)
                    wm = _req(img, "watermark", dict, where)
                    identity = {**pid, **sid, **rid, **iid}
                    images.append(
                        ImageEntry(
                            file_id=_req(img, "file", str, where),
                            sop_class_uid=_req(img, "sop_class_uid", str, where),
                            sop_instance_uid=_req(img, "sop_instance_uid", str, where),
                            transfer_syntax=_req(img, "transfer_syntax", str, where),
                            identity=Identity.of(identity),
                            identity_sha256=_req(img, "identity_sha256", str, where),
                            watermark=_req(wm, "status", str, where),
                            watermark_reason=_req(wm, "reason", str, where),
                            frames=_req(img, "frames", int, where),
                            encoding=_req(img, "encoding", str, where),
                            source_syntax=_req(img, "source_transfer_syntax", str, where),
                            invented=tuple(
                                str(x) for x in _req(img, "dicomdir_placeholders", list, where)
                            ),
                        )
                    )
    manifest = Manifest(
        created=_req(doc, "created", str, "manifest"),
        software=_req(software, "name", str, "software"),
        software_version=_req(software, "version", str, "software"),
        institution=_req(creator, "institution", str, "creator"),
        signer_subject=_req(creator, "signer_subject", str, "creator"),
        signer_fingerprint=_req(creator, "signer_fingerprint", str, "creator"),
        disc=DiscInfo(
            fileset_id=_req(disc, "fileset_id", str, "disc"),
            medium=_req(disc, "medium", str, "disc"),
            number=_disc_number(disc, "number"),
            count=_disc_number(disc, "count"),
            set_id=_req(disc, "set_id", str, "disc"),
            members=tuple(
                SetMember(
                    number=_req(m, "number", int, f"disc.set[{n}]"),
                    fileset_id=_req(m, "fileset_id", str, f"disc.set[{n}]"),
                    images=_req(m, "images", int, f"disc.set[{n}]"),
                )
                for n, m in enumerate(_req(disc, "set", list, "disc"))
            ),
        ),
        dicomdir=_file_entry(_req(doc, "dicomdir", dict, "manifest"), "dicomdir"),
        files=tuple(
            _file_entry(f, f"files[{n}]")
            for n, f in enumerate(_req(doc, "files", list, "manifest"))
        ),
        images=tuple(images),
        iso=_iso_info(doc["iso"]) if "iso" in doc else None,
        omitted=_omitted(doc),
    )
    _refuse_duplicates(manifest)
    return manifest


def _iso_info(obj: Any) -> IsoInfo:
    where = "iso"
    volume_set = _req(obj, "volume_set", list, where)
    if len(volume_set) != 2 or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in volume_set
    ):
        raise DiscError("The manifest is malformed: iso.volume_set is not two numbers.")
    return IsoInfo(
        layout=_req(obj, "layout", int, where),
        volume_id=_req(obj, "volume_id", str, where),
        application_id=_req(obj, "application_id", str, where),
        publisher=_req(obj, "publisher", str, where),
        timestamp=_req(obj, "timestamp", str, where),
        volume_set=(volume_set[0], volume_set[1]),
    )


def _omitted(doc: Mapping[str, Any]) -> tuple[OmittedFile, ...]:
    if "omitted" not in doc:
        return ()
    entries = _req(doc, "omitted", list, "manifest")
    if len(entries) > MAX_OMITTED:
        raise DiscError(
            f"The manifest names {len(entries)} left-out files; discmaker never writes more "
            f"than {MAX_OMITTED}, so the manifest was altered."
        )
    return tuple(
        OmittedFile(
            file=_req(o, "file", str, f"omitted[{n}]"),
            reason=_req(o, "reason", str, f"omitted[{n}]"),
        )
        for n, o in enumerate(entries)
    )


def _refuse_duplicates(manifest: Manifest) -> None:
    """Each file and each image is listed once: a repeated entry is never what we write, and
    would let the manifest, not the disc, decide how much work a check does."""
    for what, values in (
        ("file", [f.path for f in manifest.files]),
        ("image file", [i.file_id for i in manifest.images]),
        ("SOP Instance UID", [i.sop_instance_uid for i in manifest.images]),
    ):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                shown = value if what != "SOP Instance UID" else "one image"
                raise DiscError(
                    f"The manifest lists {what} {shown} more than once; discmaker never writes "
                    "that, so the manifest was altered."
                )
            seen.add(value)


__all__ = [
    "CHECKSUMS_PATH",
    "FORMAT",
    "FORMAT_VERSION",
    "INSTANCE_KEYWORDS",
    "MANIFEST_PATH",
    "SECURITY_DIR",
    "SIGNATURE_PATH",
    "SIGNER_PATH",
    "DiscInfo",
    "FileEntry",
    "ImageEntry",
    "IsoInfo",
    "Manifest",
    "OmittedFile",
    "SetMember",
    "build",
    "chunks",
    "parse",
]

"""Verified disc -> original files for PACS import.

Every image that verifies is written with its original pixel values, bit for bit what the
sending centre authored from, and without the watermark bookkeeping block. Nothing partial or
altered goes toward a PACS silently:

* Images that fail are refused, and so is every other image of their series (a series with
  a slice missing or altered is held back whole), unless ``allow_partial``: then the verified
  images of that series are written and the held-back ones listed.
* With ``tampered_to`` the failed images are also written, as found (restored where possible),
  into that separate folder, which may never be inside the import folder (a recursive PACS
  import would pick them up) nor hold it.
* When nothing can be restored, no folder is left behind.

Each output folder appears atomically: built under a temporary name beside it and renamed
when complete, so an interrupted restore leaves nothing under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from discmaker.check.verify import Progress, check_and_restore
from discmaker.crypto.trust import TrustStore
from discmaker.errors import OutputError, UsageError
from discmaker.models import ImageStatus, ImageVerdict, RestoreResult


def restore_disc(
    source: Path,
    *,
    trust: TrustStore,
    out: Path,
    allow_partial: bool | Callable[[Sequence[str], Sequence[str]], bool] = False,
    tampered_to: Path | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> RestoreResult:
    """Check ``source`` and write the originals of the images that verify under ``out``.

    ``out`` (and ``tampered_to``, if given) must be new folders outside ``source``, apart from
    each other and not symbolic links; anything else is refused before the disc is read
    (:class:`UsageError`, :class:`OutputError`). ``workers`` > 1 checks the images of a large
    disc in that many processes. Safe to call from several threads at once (with different
    output folders).

    ``allow_partial`` may be a function, asked once before anything is written when a series
    would be held back: ``allow_partial(held_back, not_verified)`` (disc paths) returns
    whether to write the verified images of those series anyway (the guide asks staff).
    """
    _check_destination(source, out)
    if tampered_to is not None:
        _check_destination(source, tampered_to)
        _check_apart(out, tampered_to)
    stage = _stage_beside(out)
    try:
        report, outcomes = check_and_restore(
            source,
            trust=trust,
            progress=progress,
            workers=workers,
            restore_dir=stage / "all",
            restore_tampered=tampered_to is not None,
        )
        # A trusted, valid signature with no step-1 finding (e.g. a certificate that was not
        # valid when the disc was made) vouches for the images; nothing else does.
        vouched = (
            report.signed
            and report.signature_valid
            and report.signer is not None
            and report.signer.trusted
            and not any(f.step == 1 for f in report.findings)
        )
        written = {o.verdict.path: Path(o.written) for o in outcomes if o.written}
        good = {  # verified, and its original could be written
            v.path
            for v in report.images
            if vouched
            and v.status in (ImageStatus.OK, ImageStatus.MANIFEST_ONLY)
            and (v.path in written)
        }
        held = _incomplete_series(report.images, good)
        if held and (
            allow_partial is True
            or (
                callable(allow_partial)
                and allow_partial(
                    sorted(held), sorted(v.path for v in report.images if v.path not in good)
                )
            )
        ):
            held = set()
        final = stage / "final"
        restored = _move_all(
            {p: w for p, w in written.items() if p in good and p not in held}, final, out
        )
        tampered: list[str] = []
        if tampered_to is not None:
            bad = {p: w for p, w in written.items() if p not in good}
            if bad:
                tampered = _publish(bad, tampered_to)
        refused = sorted(v.path for v in report.images if v.path not in good or v.path in held)
        if restored:
            os.replace(final, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return RestoreResult(
        report=report,
        out=str(out) if restored else "",
        restored=tuple(restored),
        tampered_written=tuple(tampered),
        refused=tuple(refused),
        held_back=tuple(sorted(held)),
    )


def _incomplete_series(images: tuple[ImageVerdict, ...], good: set[str]) -> set[str]:
    """The verified images of every series that also has an image that is not verified."""
    by_series: dict[str, list[str]] = defaultdict(list)
    for v in images:
        by_series[v.series_uid or v.series_label or v.path].append(v.path)
    held: set[str] = set()
    for paths in by_series.values():
        if any(p not in good for p in paths):
            held.update(p for p in paths if p in good)
    return held


def _stage_beside(out: Path) -> Path:
    parent = out.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"The folder {parent} does not exist or cannot be written. Choose another output."
        )
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))


def _move_all(files: dict[str, Path], into: Path, named: Path) -> list[str]:
    """Move ``files`` (disc path -> written file) under ``into``; their paths under ``named``."""
    into.mkdir()
    moved: list[str] = []
    for path, written in sorted(files.items()):
        dest = into / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(written, dest)
        moved.append(str(named / path))
    return moved


def _publish(files: dict[str, Path], out: Path) -> list[str]:
    """Write ``files`` as the new folder ``out``, atomically (it may be on another disk)."""
    stage = _stage_beside(out)
    try:
        moved = _move_all(files, stage / "final", out)
        os.replace(stage / "final", out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return moved


def _check_apart(out: Path, tampered_to: Path) -> None:
    a, b = out.resolve(), tampered_to.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise UsageError(
            f"The folder for altered images, {tampered_to}, must be apart from the import "
            f"folder {out}: neither inside the other, so that a PACS import of {out} can never "
            "pick up an altered image. Choose another folder."
        )


def _check_destination(source: Path, out: Path) -> None:
    """Refuse an output that is a symbolic link, exists, or lies in (or is) the source."""
    if out.is_symlink():
        target = "a missing target" if not out.exists() else "another place"
        raise OutputError(
            f"The output {out} is a symbolic link to {target}. discmaker restores only into a "
            "new, real folder: choose another output."
        )
    src = source.resolve()
    dest = out.resolve()
    inside = dest == src or src in dest.parents
    if not inside and src.is_dir():
        # Also through another name for the same folder (a bind mount, a case-insensitive
        # file system): compare the output's existing ancestors with the source itself.
        for folder in (dest, *dest.parents):
            try:
                inside = os.path.samefile(folder, src)
            except OSError:  # not there (yet), or not ours to look at
                continue
            if inside:
                break
    if inside:
        raise UsageError(
            f"The output {out} is inside the disc being restored, {source}. discmaker never "
            "writes into its input: choose an output outside it."
        )
    if out.exists():
        raise OutputError(f"{out} already exists. Choose a new folder for the restored images.")


__all__ = ["restore_disc"]

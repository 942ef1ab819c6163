"""Verified disc -> original files for PACS import.

Every image that verifies is written with its original pixel values, bit for bit what the
sending centre authored from, and without the watermark bookkeeping block. Images that fail
are refused; with ``include_tampered`` they are written (as found, restored where possible)
under ``TAMPERED/`` and listed, so nobody imports them by accident.

The output folder appears atomically: it is built under a temporary name beside it and
renamed when complete, so an interrupted restore leaves nothing under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from discmaker.check.verify import Progress, check_and_restore
from discmaker.crypto.trust import TrustStore
from discmaker.errors import OutputError, UsageError
from discmaker.models import ImageStatus, RestoreResult

TAMPERED_DIR = "TAMPERED"


def restore_disc(
    source: Path,
    *,
    trust: TrustStore,
    out: Path,
    include_tampered: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
) -> RestoreResult:
    """Check ``source`` and write the originals of the images that verify under ``out``.

    ``out`` must be a new folder outside ``source`` and not a symbolic link; anything else is
    refused before the disc is read (:class:`UsageError`, :class:`OutputError`). ``workers``
    > 1 checks the images of a large disc in that many processes. Safe to call from several
    threads at once (with different ``out`` folders).
    """
    _check_destination(source, out)
    parent = out.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"The folder {parent} does not exist or cannot be written. Choose another output."
        )
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        report, outcomes = check_and_restore(
            source,
            trust=trust,
            progress=progress,
            workers=workers,
            restore_dir=stage / "all",
            restore_tampered=include_tampered,
        )
        restored: list[str] = []
        tampered: list[str] = []
        refused: list[str] = []
        final = stage / "final"
        final.mkdir()
        # A trusted, valid signature with no step-1 finding (e.g. a certificate that was not
        # valid when the disc was made) vouches for the images; nothing else does.
        vouched = (
            report.signed
            and report.signature_valid
            and report.signer is not None
            and report.signer.trusted
            and not any(f.step == 1 for f in report.findings)
        )
        for outcome in outcomes:
            v = outcome.verdict
            written = Path(outcome.written) if outcome.written else None
            good = v.status in (ImageStatus.OK, ImageStatus.MANIFEST_ONLY)
            if written is not None and good and vouched:
                dest = final / v.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(written, dest)
                restored.append(str(out / v.path))
                continue
            refused.append(v.path)
            if include_tampered and written is not None:
                dest = final / TAMPERED_DIR / v.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(written, dest)
                tampered.append(str(out / TAMPERED_DIR / v.path))
        judged = {o.verdict.path for o in outcomes}
        refused.extend(v.path for v in report.images if v.path not in judged)
        os.replace(final, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return RestoreResult(
        report=report,
        out=str(out),
        restored=tuple(restored),
        tampered_written=tuple(tampered),
        refused=tuple(sorted(set(refused))),
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


__all__ = ["TAMPERED_DIR", "restore_disc"]

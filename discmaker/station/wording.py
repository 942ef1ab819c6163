"""Why a disc job failed, worded for the station's operator.

The author's messages are written for someone at the command line with an exported folder:
they name files by path and suggest flags (``--medium``, ``--allow-mixed-patients``). At the
station the files are the spool's hash-named copies and there are no flags: the operator
has the PACS, ``examples/station.toml`` and ``discmaker station retry``. :func:`job_failure`
rewords the author's error accordingly (instances by SOP Instance UID, settings by their key
in the configuration); a message it does not know is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from discmaker.errors import DiscmakerError, TooLargeError, UnusableFileError
from discmaker.station.config import StationConfig

_CONFIG = "the station's configuration"
_MIXED = re.compile(r"images of (\d+) different patients")
_LARGER_MEDIUM = re.compile(r"Choose a larger medium \(--medium [^)]*\)\.?")
_MEDIA = ("cd", "dvd", "bd", "usb")


def job_failure(
    exc: DiscmakerError,
    *,
    job: int,
    requested: bool,
    files: Sequence[tuple[str, str]],
    config: StationConfig,
    one_disc: bool = False,
) -> str:
    """The reason of ``job`` for ``exc``; ``requested``: a Media Creation request made the
    job; ``files``: the job's (SOP Instance UID, spool path); ``one_disc``: the request said
    Allow Media Splitting NO."""
    if isinstance(exc, UnusableFileError):
        return _unusable(exc, job, files, config)
    text = _name_instances(str(exc), files)
    mixed = _MIXED.search(text)
    if mixed is not None:
        what = (
            "ask for one disc per patient (one Media Creation request each)"
            if requested
            else "correct the study in the PACS and send it again without the other "
            "patient's images"
        )
        return (
            f"The images are of {mixed.group(1)} different patients ((0010,0020) Patient ID "
            f"differs), and a patient disc holds one patient: {what}"
        )
    if isinstance(exc, TooLargeError):
        return _too_large(text, config, one_disc=one_disc)
    return text


def _unusable(
    exc: UnusableFileError, job: int, files: Sequence[tuple[str, str]], config: StationConfig
) -> str:
    uid = next((sop_uid for sop_uid, path in files if path == exc.path), None)
    what = exc.path if uid is None else f"The instance {uid}"
    advice = "Correct it in the PACS and send the study again (a new disc follows)"
    if not config.skip_unusable:
        advice += (
            f"; or set skip_unusable = true in [disc] of {_CONFIG}, restart the station and "
            f"run: discmaker station retry {job} (the disc is made without such instances, "
            "each named on it)"
        )
    return f"{what}: {exc.problem}. {advice}"


def _too_large(text: str, config: StationConfig, *, one_disc: bool) -> str:
    larger = _MEDIA[_MEDIA.index(config.medium.name.lower()) + 1 :]
    if larger:
        choice = ", ".join(f'"{m}"' for m in larger)
        hint = f"Set medium = {choice} (larger) in [disc] of {_CONFIG}"
    else:
        hint = f"The station's largest medium is {config.medium.name.lower()}"
    text = _LARGER_MEDIUM.sub("", text).strip()
    if one_disc:
        hint += (
            ", or send the Media Creation request again with Allow Media Splitting YES "
            "(this one asked for a single disc)"
        )
    elif not config.span:
        hint += ", or span = true to make a set of discs"
    return f"{text.rstrip('.')}. {hint}"


def _name_instances(text: str, files: Sequence[tuple[str, str]]) -> str:
    """``text`` with each spool path replaced by its instance's SOP Instance UID."""
    for sop_uid, path in files:
        if path in text:
            text = text.replace(path, f"the instance {sop_uid}")
    return text[:1].upper() + text[1:]


__all__ = ["job_failure"]

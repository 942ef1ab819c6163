"""The job files a disc robot's hot folder takes: what the station writes after the ISO images.

Two kinds (``robot`` in ``[output]`` of the station's configuration):

* ``discmaker``: one JSON file per job, ``LABEL.JOB.json`` (``"format":
  "discmaker-robot-job"``: the job, its label, copies and each disc's image and label PDF),
  for a site's own hand-over script.
* ``ptburn``: Primera's PTBurn (Disc Publisher robots), one Job Request File per disc,
  ``LABEL.JRQ`` (``LABEL-k.JRQ`` in a set): ``Key=Value`` lines naming the ISO by the path
  the robot's computer sees (``robot_folder``: the hot folder as that computer names it,
  e.g. ``\\\\DISCSERVER\\PTBurnJobs``), the disc type from the medium, the copies, verify
  after burning, and refuse a disc that is not blank. PTBurn renames a job file as it works
  (``.JRQ`` new, ``.QRJ`` taken, ``.INP`` burning, ``.DON`` done, ``.ERR`` failed: its
  default extensions, PTSETUP.INI can change them); the label PDF is not named in it
  (PTBurn prints SureThing, JPEG, BMP or PRN files), it lies beside the ISO for the operator.

A job file is written last, once everything it names is in the folder, and is never written
a second time: a robot that watches for new job files would make the discs twice.
:func:`taken` says whether the folder holds a job file already under any of its names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from discmaker.disc.media import Medium
from discmaker.format.canonical import dumps

RobotKind = Literal["discmaker", "ptburn"]
ROBOTS: tuple[RobotKind, ...] = ("discmaker", "ptburn")
ROBOT_JOB_FORMAT = "discmaker-robot-job"

# PTBurn's default job file extensions: new, discovered, in progress, done, failed
PTBURN_STAGES = (".JRQ", ".QRJ", ".INP", ".DON", ".ERR")
_PTBURN_DISC_TYPES = {Medium.CD: "CDR", Medium.DVD: "DVDR", Medium.BD: "BDR"}
_PTBURN_ID_MAX = 32  # JobID and ClientID: at most 32 ASCII characters


@dataclass(frozen=True)
class JobFile:
    """One job file for the robot: its name in the hot folder and its bytes."""

    name: str
    data: bytes

    def stages(self) -> tuple[str, ...]:
        """Every name the robot may have given this job file by now (itself first)."""
        if not self.name.endswith(PTBURN_STAGES[0]):
            return (self.name,)
        stem = self.name[: -len(PTBURN_STAGES[0])]
        return tuple(stem + ext for ext in PTBURN_STAGES)


def job_files(
    kind: RobotKind,
    *,
    job: int,
    label: str,
    images: Sequence[str],
    label_pdf: str,
    copies: int,
    medium: Medium,
    robot_folder: str,
) -> list[JobFile]:
    """The job files of one job: ``images`` (file names in the hot folder, disc order),
    ``label_pdf`` (a file name there, "" for none)."""
    if kind == "ptburn":
        return [
            _ptburn(
                label if len(images) == 1 else f"{label}-{n}",
                image,
                copies=copies,
                medium=medium,
                robot_folder=robot_folder,
                title=label if len(images) == 1 else f"{label} disc {n} of {len(images)}",
            )
            for n, image in enumerate(images, start=1)
        ]
    discs = [
        {"image": image, **({"label_pdf": label_pdf} if label_pdf else {})} for image in images
    ]
    ticket = {
        "format": ROBOT_JOB_FORMAT,
        "format_version": 1,
        "job": job,
        "label": label,
        "copies": copies,
        "discs": discs,
    }
    return [JobFile(f"{label}.JOB.json", dumps(ticket))]


def taken(folder: Path, job_file: JobFile) -> bool:
    """Whether ``folder`` holds ``job_file`` already: unchanged under its own name, or under
    a name the robot gave it while working on it (then it may be gone from the queue and be
    burning, or done)."""
    own, *later = job_file.stages()
    if any((folder / name).exists() for name in later):
        return True
    try:
        path = folder / own
        return path.stat().st_size == len(job_file.data) and path.read_bytes() == job_file.data
    except OSError:
        return False


def _ptburn(
    stem: str, image: str, *, copies: int, medium: Medium, robot_folder: str, title: str
) -> JobFile:
    disc_type = _PTBURN_DISC_TYPES.get(medium)
    if disc_type is None:  # refused when the configuration is loaded; a guard for the API
        raise ValueError(f"PTBurn burns CD, DVD or BD, not {medium.name}")
    lines = [
        f"JobID={_ascii(title)[:_PTBURN_ID_MAX]}",
        "ClientID=discmaker",
        f"DiscType={disc_type}",
        f"ImageFile={robot_path(robot_folder, image)}",
        f"Copies={copies}",
        "VerifyDisc=YES",
        "RejectIfNotBlank=YES",
        "CloseDisc=YES",
    ]
    return JobFile(f"{stem}{PTBURN_STAGES[0]}", ("\r\n".join(lines) + "\r\n").encode("ascii"))


def robot_path(robot_folder: str, name: str) -> str:
    """``name`` in the hot folder as the robot's computer names it: joined with a backslash
    when ``robot_folder`` is a Windows path (``C:\\PTBurnJobs``, ``\\\\server\\share``)."""
    if "\\" in robot_folder or (len(robot_folder) >= 2 and robot_folder[1] == ":"):
        return robot_folder.rstrip("\\") + "\\" + name
    return robot_folder.rstrip("/") + "/" + name


def _ascii(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "_" for c in text)


__all__ = ["ROBOTS", "ROBOT_JOB_FORMAT", "JobFile", "RobotKind", "job_files", "robot_path", "taken"]

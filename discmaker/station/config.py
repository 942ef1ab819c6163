"""The station's settings: one TOML file (``--config``), essentials overridable by flags.

Every key is documented in ``examples/station.toml``. Unknown keys are refused by name (a
typo must not silently leave a default in force), and so are values of the wrong type:
the station runs unattended, so a configuration mistake is found at start, not at 3 a.m.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs

from discmaker import APP_NAME
from discmaker.disc.media import Medium
from discmaker.errors import KeyFileError, UsageError
from discmaker.pacs.destination import check_aet
from discmaker.station.robots import ROBOTS, RobotKind

DEFAULT_PORT = 11112
QUEUE_NAME = "queue.sqlite"
_FLAGS = "the command line"
MAX_PASSPHRASE_FILE = 4096

# TOML section -> the StationConfig fields it holds.
_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "dicom": (
        "aet",
        "host",
        "port",
        "allowed_callers",
        "allow_any_caller",
        "max_associations",
        "max_associations_per_address",
        "max_instance_mb",
    ),
    "station": (
        "min_free_mb",
        "out",
        "state",
        "quiet_seconds",
        "incomplete_seconds",
        "keep_received_days",
        "name",
    ),
    "signing": ("key", "cert", "passphrase_file"),
    "disc": (
        "format",
        "medium",
        "span",
        "institution",
        "label_pdf",
        "skip_unusable",
        "workers",
        "prepare_ahead",
    ),
    "output": ("burn", "hot_folder", "robot", "robot_folder"),
}


def default_state() -> Path:
    """The state folder without a configuration: the user's data folder's ``station``."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "station"


@dataclass(frozen=True, kw_only=True)
class StationConfig:
    """Everything the station needs; paths are absolute once loaded."""

    # [dicom] Our AE title and where we listen; the calling AE titles accepted (empty: any).
    aet: str = "DISCMAKER"
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    allowed_callers: frozenset[str] = frozenset()
    # The station signs whatever it is sent: an empty allowed_callers is refused unless
    # this says, knowingly, that any caller may send (a firewall then decides who can).
    allow_any_caller: bool = False
    max_associations: int = 16
    # Connections one address may hold at once (idle ones too), so one host cannot take
    # every slot; a PACS sending on several associations at once needs as many.
    max_associations_per_address: int = 4
    # An instance larger than this is refused (0xA700); 0: no limit. The station receives
    # each instance into a file as it arrives (never whole in memory).
    max_instance_mb: int = 2048
    # [station] Where discs and their labels go; where the received instances, the job
    # queue and the audit log live; a study is complete once nothing arrived for
    # quiet_seconds; a study whose sender broke off waits incomplete_seconds for the rest.
    out: Path
    state: Path = field(default_factory=default_state)
    quiet_seconds: float = 30.0
    incomplete_seconds: float = 3600.0
    # The received instances of a job verified, failed or cancelled are kept this long (so
    # `station retry` can make it again, with any late instances), then deleted.
    keep_received_days: float = 7.0
    # Instances are refused (0xA700, the sender tries again later) while less than this is
    # free on the state folder's disk, so the queue and the audit log can still be written.
    min_free_mb: int = 1024
    name: str = ""  # how the audit log names this station (default: AE title @ host name)
    # [signing] The centre's key and certificate; the key's passphrase from a file only the
    # station's user can read, else from DISCMAKER_PASSPHRASE.
    key: Path
    cert: Path
    passphrase_file: Path | None = None
    # [disc] What each disc is.
    format: Literal["iso", "folder"] = "iso"
    medium: Medium = Medium.CD
    span: bool = True  # a study too large for one medium becomes a set (disc k of n)
    institution: str | None = None
    label_pdf: bool = True
    # Leave out an instance that cannot go on a disc (named on the disc and in the audit
    # log) instead of failing the job.
    skip_unusable: bool = False
    workers: int | None = None  # authoring processes (default: every core)
    # Seal each instance as it arrives (in `workers` processes kept for it), so that a disc
    # is mostly made once its study is complete; false: only once the study is complete.
    prepare_ahead: bool = True
    # [output] Burn each ISO with xorriso ("" = the one burner found) and read it back, or
    # hand it to a disc robot's hot folder; neither: the disc stays in ``out``.
    burn: str | None = None
    hot_folder: Path | None = None
    # The robot's job files (discmaker.station.robots): "discmaker" (JSON, for a site's own
    # script) or "ptburn" (Primera PTBurn .JRQ); robot_folder: the hot folder as the robot's
    # computer names it in those files ('\\DISCSERVER\PTBurnJobs' in TOML; "": hot_folder).
    robot: RobotKind = "discmaker"
    robot_folder: str = ""

    @property
    def queue_path(self) -> Path:
        return self.state / QUEUE_NAME

    @property
    def spool(self) -> Path:
        return self.state / "received"

    @property
    def audit_path(self) -> Path:
        return self.state / "audit.jsonl"


def load(path: Path | None, **overrides: Any) -> StationConfig:
    """The configuration from ``path`` (TOML) with ``overrides`` (flags; None = not given).

    Raises :class:`UsageError` naming the file, the key and what is wrong.
    """
    values: dict[str, Any] = {}
    where = str(path) if path is not None else _FLAGS
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UsageError(f"The station configuration {path} does not exist.") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"The station configuration {path} cannot be read ({exc}).") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}.") from exc
        values = _flatten(doc, where)
    values.update({k: v for k, v in overrides.items() if v is not None})
    base = path.parent if path is not None else Path.cwd()
    return _build(values, base, where)


def _flatten(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, body in doc.items():
        allowed = _SECTIONS.get(section)
        if allowed is None:
            raise UsageError(
                f"{where}: unknown section [{section}] (known: "
                f"{', '.join(f'[{s}]' for s in _SECTIONS)})."
            )
        if not isinstance(body, Mapping):
            raise UsageError(f"{where}: [{section}] must be a table of settings.")
        for key, value in body.items():
            if key not in allowed:
                raise UsageError(
                    f"{where}: [{section}] has no setting {key!r} (known: {', '.join(allowed)})."
                )
            values[key] = value
    return values


def _build(values: Mapping[str, Any], base: Path, where: str) -> StationConfig:
    for required in ("out", "key", "cert"):
        if required not in values:
            has_none = f" ({where} has none)" if where != _FLAGS else ""
            raise UsageError(
                f"The station needs --{required}, or '{required}' in its --config "
                f"file{has_none}. See examples/station.toml."
            )
    known = {f.name for f in fields(StationConfig)}
    unknown = set(values) - known
    if unknown:  # only flags can get here; the TOML keys were checked by section
        raise UsageError(f"Unknown station setting(s): {', '.join(sorted(unknown))}.")
    conv: dict[str, Any] = {}
    for key, value in values.items():
        conv[key] = _convert(key, value, base, where)
    config = StationConfig(**conv)
    _check(config, where)
    return config


def _convert(key: str, value: Any, base: Path, where: str) -> Any:
    def bad(kind: str) -> UsageError:
        return UsageError(f"{where}: {key} must be {kind}, not {value!r}.")

    if key in ("out", "state", "key", "cert", "passphrase_file", "hot_folder"):
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise bad("a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    if key in (
        "port",
        "workers",
        "max_associations",
        "max_associations_per_address",
        "max_instance_mb",
        "min_free_mb",
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if key in ("quiet_seconds", "incomplete_seconds", "keep_received_days"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number of seconds")
        return float(value)
    if key in ("span", "label_pdf", "skip_unusable", "allow_any_caller", "prepare_ahead"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "allowed_callers":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise bad("a list of AE titles")
        return frozenset(i.strip() for i in items if i.strip())
    if key == "medium":
        try:
            return Medium[str(value).upper()]
        except KeyError:
            raise bad(f"one of {', '.join(m.name.lower() for m in Medium)}") from None
    if key == "robot":
        if value not in ROBOTS:
            raise bad(" or ".join(f'"{r}"' for r in ROBOTS))
        return value
    if key == "robot_folder":
        if not isinstance(value, str):
            raise bad("a path as the robot's computer writes it")
        return value
    if key == "format":
        if value not in ("iso", "folder"):
            raise bad('"iso" or "folder"')
        return value
    if not isinstance(value, str):
        raise bad("text")
    return value


def _check(config: StationConfig, where: str) -> None:
    if not 0 <= config.port <= 65535:
        raise UsageError(f"{where}: port must be 0-65535, not {config.port}.")
    try:
        check_aet(config.aet, what="AE title of this station")
        for title in config.allowed_callers:
            check_aet(title, what="allowed calling AE title")
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    if config.quiet_seconds < 0 or config.incomplete_seconds < config.quiet_seconds:
        raise UsageError(
            f"{where}: quiet_seconds must be 0 or more, and incomplete_seconds at least as long."
        )
    if not config.allowed_callers and not config.allow_any_caller:
        raise UsageError(
            f"{where}: the station signs whatever it is sent, so it needs allowed_callers: "
            'the AE titles of your PACS and modalities (e.g. allowed_callers = ["PACS"]); '
            "and firewall its port to them, as AE titles are not passwords. Only if a "
            "firewall already decides who can reach it: allow_any_caller = true."
        )
    if (
        config.max_associations < 1
        or config.max_associations_per_address < 1
        or config.min_free_mb < 0
        or config.max_instance_mb < 0
    ):
        raise UsageError(
            f"{where}: max_associations and max_associations_per_address must be 1 or more, "
            "min_free_mb and max_instance_mb 0 or more."
        )
    if config.keep_received_days < 0:
        raise UsageError(f"{where}: keep_received_days must be 0 or more.")
    if config.workers is not None and config.workers < 1:
        raise UsageError(f"{where}: workers must be at least 1.")
    if config.burn is not None and config.format != "iso":
        raise UsageError(f'{where}: burn needs format = "iso".')
    if config.burn is not None and config.hot_folder is not None:
        raise UsageError(f"{where}: give burn or hot_folder, not both.")
    if config.hot_folder is not None and config.format != "iso":
        raise UsageError(f'{where}: a robot\'s hot folder takes ISO images: format = "iso".')
    if config.hot_folder is None and (config.robot != "discmaker" or config.robot_folder):
        raise UsageError(f"{where}: robot and robot_folder need hot_folder (the robot's folder).")
    if config.robot == "ptburn" and config.medium == Medium.USB:
        raise UsageError(f'{where}: a PTBurn robot burns discs: medium = "cd", "dvd" or "bd".')


def read_passphrase(config: StationConfig) -> bytes | None:
    """The key's passphrase from ``passphrase_file``, which only its owner may read (mode
    0600 or 0400); None when no file is configured (the caller tries the environment)."""
    path = config.passphrase_file
    if path is None:
        return None
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"The passphrase file {path} can be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}). Run: chmod 600 {path}"
            )
        if info.st_size > MAX_PASSPHRASE_FILE:
            raise KeyFileError(f"{path} is too large to be a passphrase file.")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"The passphrase file {path} does not exist.") from exc
    except PermissionError as exc:
        raise KeyFileError(
            f"The passphrase file {path} cannot be read by this user. It must belong to the "
            "user the station runs as."
        ) from exc
    return data.rstrip(b"\r\n")


def with_port(config: StationConfig, port: int) -> StationConfig:
    """A copy listening on ``port`` (tests and the bench use the port the kernel chose)."""
    return replace(config, port=port)


__all__ = [
    "DEFAULT_PORT",
    "QUEUE_NAME",
    "StationConfig",
    "default_state",
    "load",
    "read_passphrase",
    "with_port",
]

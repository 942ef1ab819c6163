"""discmaker: tamper-evident patient discs of DICOM studies, and the checker for them.

The library behind the ``discmaker`` command. Everything a program needs is importable from
here; ``import discmaker`` stays light (the heavy modules, numpy and pydicom among them, load
on first use of a name). Results are frozen dataclasses, each with a versioned ``to_json()``
(JSON Schemas in ``docs/schemas/``); errors are :class:`DiscmakerError` subclasses carrying
the exit code the CLI uses. Nothing here prints, and nothing outside ``discmaker.ui`` imports
a terminal library. Log records go to the ``discmaker`` logger (silent unless you configure
logging).

Author a disc from a study folder, then check it as the receiving clinic would::

    >>> from pathlib import Path
    >>> import discmaker
    >>> identity = discmaker.generate_identity("City Imaging Centre")
    >>> key_path, cert_path = discmaker.write_identity(
    ...     identity, Path(keys_dir), passphrase=b"correct horse"
    ... )
    >>> result = discmaker.author_disc(
    ...     discmaker.AuthorRequest(
    ...         inputs=(Path(study_dir),),
    ...         out=Path(out_dir) / "disc.iso",
    ...         key=discmaker.load_private_key(key_path, passphrase=b"correct horse"),
    ...         cert=discmaker.load_certificate(cert_path),
    ...         label="DISC_0001",
    ...         medium=discmaker.Medium.CD,
    ...     )
    ... )
    >>> result.images == result.watermarked
    True
    >>> trust = discmaker.TrustStore.from_paths([cert_path])
    >>> report = discmaker.check_disc(result.out, trust=trust)
    >>> report.verdict is discmaker.Verdict.VERIFIED, report.exit_code
    (True, 0)
    >>> report.to_json()["format"]
    'discmaker-check-report'

``check_disc`` never raises for a disc that fails: a tampered disc is a report with
``verdict`` ``Verdict.TAMPERED``, per image in ``report.images``. It raises
:class:`DiscError` for input it cannot read, :class:`InputError` subclasses for a problem
the caller must fix.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

APP_NAME = "discmaker"
__version__: str  # the installed version, looked up on first use (__getattr__)

# A library stays silent unless the application configures logging (the CLI's --verbose).
logging.getLogger(APP_NAME).addHandler(logging.NullHandler())

# Public name -> (module, name in that module). Loaded on first access (PEP 562).
_LAZY: dict[str, tuple[str, str]] = {
    # what the library does
    "author_disc": ("discmaker.author.create", "author"),
    "check_disc": ("discmaker.check.verify", "check_disc"),
    "check_set": ("discmaker.check.verify", "check_set"),
    "restore_disc": ("discmaker.check.restore", "restore_disc"),
    "import_disc": ("discmaker.pacs.store", "import_disc"),
    # requests, results, reports
    "AuthorRequest": ("discmaker.author.create", "AuthorRequest"),
    "AuthorResult": ("discmaker.author.create", "AuthorResult"),
    "author_result_to_json": ("discmaker.models", "author_result_to_json"),
    "CheckReport": ("discmaker.models", "CheckReport"),
    "SetReport": ("discmaker.models", "SetReport"),
    "RestoreResult": ("discmaker.models", "RestoreResult"),
    "ImportResult": ("discmaker.pacs.store", "ImportResult"),
    "Destination": ("discmaker.pacs.destination", "Destination"),
    "ImageVerdict": ("discmaker.models", "ImageVerdict"),
    "ImageStatus": ("discmaker.models", "ImageStatus"),
    "Verdict": ("discmaker.models", "Verdict"),
    "Finding": ("discmaker.models", "Finding"),
    "Region": ("discmaker.models", "Region"),
    "Signer": ("discmaker.models", "Signer"),
    "Medium": ("discmaker.disc.media", "Medium"),
    # keys and trust
    "Identity": ("discmaker.crypto.signing", "Identity"),
    "generate_identity": ("discmaker.crypto.signing", "generate_identity"),
    "write_identity": ("discmaker.crypto.signing", "write_identity"),
    "load_private_key": ("discmaker.crypto.signing", "load_private_key"),
    "load_certificate": ("discmaker.crypto.signing", "load_certificate"),
    "fingerprint": ("discmaker.crypto.signing", "fingerprint"),
    "TrustStore": ("discmaker.crypto.trust", "TrustStore"),
    "TrustedSigner": ("discmaker.crypto.trust", "TrustedSigner"),
    "Tls": ("discmaker.pacs.network", "Tls"),
    # errors
    "DestinationError": ("discmaker.pacs.destination", "DestinationError"),
    **{
        name: ("discmaker.errors", name)
        for name in (
            "DiscmakerError",
            "InputError",
            "UsageError",
            "NoImagesError",
            "StudyError",
            "UnusableFileError",
            "KeyFileError",
            "OutputError",
            "TooLargeError",
            "DiscError",
            "VerificationError",
            "UntrustedSignerError",
            "InternalError",
        )
    },
}

# Precise types for type checkers; at run time the names load lazily through __getattr__.
# (import-linter is told to ignore these imports: exclude_type_checking_imports.)
if TYPE_CHECKING:
    from discmaker.author.create import AuthorRequest, AuthorResult
    from discmaker.author.create import author as author_disc
    from discmaker.check.restore import restore_disc
    from discmaker.check.verify import check_disc, check_set
    from discmaker.crypto.signing import (
        Identity,
        fingerprint,
        generate_identity,
        load_certificate,
        load_private_key,
        write_identity,
    )
    from discmaker.crypto.trust import TrustedSigner, TrustStore
    from discmaker.disc.media import Medium
    from discmaker.errors import (
        DiscError,
        DiscmakerError,
        InputError,
        InternalError,
        KeyFileError,
        NoImagesError,
        OutputError,
        StudyError,
        TooLargeError,
        UntrustedSignerError,
        UnusableFileError,
        UsageError,
        VerificationError,
    )
    from discmaker.models import (
        CheckReport,
        Finding,
        ImageStatus,
        ImageVerdict,
        Region,
        RestoreResult,
        SetReport,
        Signer,
        Verdict,
        author_result_to_json,
    )
    from discmaker.pacs.destination import Destination, DestinationError
    from discmaker.pacs.network import Tls
    from discmaker.pacs.store import ImportResult, import_disc

__all__ = [
    "APP_NAME",
    "AuthorRequest",
    "AuthorResult",
    "CheckReport",
    "Destination",
    "DestinationError",
    "DiscError",
    "DiscmakerError",
    "Finding",
    "Identity",
    "ImageStatus",
    "ImageVerdict",
    "ImportResult",
    "InputError",
    "InternalError",
    "KeyFileError",
    "Medium",
    "NoImagesError",
    "OutputError",
    "Region",
    "RestoreResult",
    "SetReport",
    "Signer",
    "StudyError",
    "Tls",
    "TooLargeError",
    "TrustStore",
    "TrustedSigner",
    "UntrustedSignerError",
    "UnusableFileError",
    "UsageError",
    "Verdict",
    "VerificationError",
    "__version__",
    "author_disc",
    "author_result_to_json",
    "check_disc",
    "check_set",
    "fingerprint",
    "generate_identity",
    "import_disc",
    "load_certificate",
    "load_private_key",
    "restore_disc",
    "write_identity",
]


def _installed_version() -> str:
    """The installed distribution's version, looked up on first use: importlib.metadata
    costs more to import than a ``discmaker check`` spends reading a 100-image disc's
    DICOMDIR, and most runs never show the version."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("discmaker")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _installed_version()
    else:
        try:
            module, attr = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})

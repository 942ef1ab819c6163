"""The receiving clinic's trust store: certificates of imaging centres it has pinned.

A managed store is one folder holding ``<FINGERPRINT without colons>.pem`` files, by default
``platformdirs.user_data_dir("discmaker")/trusted``; the environment variable
``DISCMAKER_TRUST_DIR`` points it elsewhere. :meth:`TrustStore.from_paths` gives a read-only
view over ``--trust`` folders (every ``*.pem`` in them) and certificate files.

Trust belongs to the public key, as it does for the watermarks (named by key id): a centre
that renews its certificate over the same key stays the same signer, for its new discs and its
old ones, whichever of the certificates is pinned. A certificate only counts for a pinned key
when it is signed by that key (:func:`~discmaker.crypto.signing.self_signed`), so nobody can
pass off dates or a name of their own under someone else's key. Files are still named, listed
and removed by certificate fingerprint. An empty store trusts nobody: the caller must report
"not verifiable", never "ok".

Files in a store folder that are not usable Ed25519 certificates are skipped and listed in
:attr:`TrustStore.problems` instead of stopping the check; a certificate file named explicitly
in :meth:`TrustStore.from_paths` that cannot be used raises :class:`KeyFileError`, since the
operator asked for exactly that file.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from discmaker import APP_NAME
from discmaker.atomic import replace_file
from discmaker.crypto.signing import (
    fingerprint,
    key_id,
    load_certificate,
    self_signed,
    subject_text,
)
from discmaker.errors import InternalError, KeyFileError, OutputError, UsageError

TRUST_DIR_ENV = "DISCMAKER_TRUST_DIR"
SITE_TRUST_DIR_ENV = "DISCMAKER_SITE_TRUST_DIR"
#: The site-wide store an administrator fills for every user of a workstation (read-only
#: to discmaker): ``$DISCMAKER_SITE_TRUST_DIR``, else this folder.
SITE_TRUST_DIR = Path("/etc/discmaker/trusted")
_HEX = frozenset("0123456789ABCDEF")


@dataclass(frozen=True)
class TrustedSigner:
    """One pinned certificate, with what a person needs to recognise it."""

    subject: str
    fingerprint: str
    key_id: bytes
    not_after: dt.datetime
    certificate: x509.Certificate

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> TrustedSigner:
        """Describe any Ed25519 certificate (also an untrusted one, for display)."""
        public_key = certificate.public_key()
        if not isinstance(public_key, Ed25519PublicKey):
            raise InternalError("TrustedSigner needs an Ed25519 certificate")
        return cls(
            subject=subject_text(certificate),
            fingerprint=fingerprint(certificate),
            key_id=key_id(public_key),
            not_after=certificate.not_valid_after_utc,
            certificate=certificate,
        )


@dataclass(frozen=True)
class TrustProblem:
    """A file in a trust folder that was skipped, and why (never patient data)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class _Entry:
    signer: TrustedSigner
    path: Path


class TrustStore:
    """Pinned signer certificates. Reads the folder afresh on every query (it is small)."""

    def __init__(self, directory: Path) -> None:
        self._directory: Path | None = Path(directory)
        self._sources: tuple[Path, ...] = (Path(directory),)

    @classmethod
    def default(cls) -> TrustStore:
        """The user's managed store, which ``add`` and ``remove`` change
        (``$DISCMAKER_TRUST_DIR`` overrides its location), and the site-wide store an
        administrator keeps for everyone (``$DISCMAKER_SITE_TRUST_DIR``, else
        :data:`SITE_TRUST_DIR`), which is only read."""
        override = os.environ.get(TRUST_DIR_ENV)
        if override:
            user = Path(override)
        else:
            user = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "trusted"
        store = cls(user)
        site = Path(os.environ.get(SITE_TRUST_DIR_ENV) or SITE_TRUST_DIR)
        if site.is_dir() and site != user:
            store._sources = (user, site)
        return store

    @property
    def site_directory(self) -> Path | None:
        """The site-wide folder this store also reads, if there is one."""
        return self._sources[1] if self._directory is not None and len(self._sources) > 1 else None

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> TrustStore:
        """A read-only view over folders (their ``*.pem``) and certificate files."""
        store = cls.__new__(cls)
        store._directory = None
        store._sources = tuple(Path(path) for path in paths)
        for path in store._sources:
            if not path.exists():
                raise KeyFileError(f"trusted certificate or folder {path} does not exist")
        store._scan()  # a named certificate file that cannot be used fails now, not later
        return store

    @property
    def directory(self) -> Path | None:
        """The managed folder, or None for a read-only view."""
        return self._directory

    @property
    def read_only(self) -> bool:
        return self._directory is None

    @property
    def problems(self) -> builtins.list[TrustProblem]:
        """Files that were skipped on the latest read of the store."""
        return self._scan()[1]

    def add(self, cert_path: Path) -> TrustedSigner:
        """Pin the certificate in ``cert_path``; adding it again changes nothing."""
        return self.add_certificate(load_certificate(cert_path))

    def add_certificate(self, certificate: x509.Certificate) -> TrustedSigner:
        """Pin ``certificate`` (e.g. read from a received disc); again changes nothing."""
        directory = self._writable("add a certificate to")
        signer = TrustedSigner.from_certificate(certificate)
        target = directory / f"{signer.fingerprint.replace(':', '')}.pem"
        for entry in self._scan()[0]:
            if entry.signer.fingerprint == signer.fingerprint and entry.path.parent == directory:
                return entry.signer  # already pinned (perhaps under another file name)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_file(target, certificate.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            raise OutputError(f"cannot write to the trust store {directory}: {exc}") from exc
        return signer

    def remove(self, fingerprint: str) -> TrustedSigner:
        """Unpin by SHA-256 fingerprint (colons, case optional); :class:`UsageError` if absent."""
        directory = self._writable("remove a certificate from")
        wanted = normalise_fingerprint(fingerprint)
        found = [
            entry
            for entry in self._scan()[0]
            if entry.signer.fingerprint.replace(":", "") == wanted
        ]
        matches = [entry for entry in found if entry.path.parent == directory]
        if found and not matches:
            raise UsageError(
                f"the signer with the fingerprint {fingerprint.strip()} is trusted in the "
                f"site-wide store {found[0].path.parent}; ask your administrator to remove it"
            )
        if not matches:
            raise UsageError(f"no trusted signer has the fingerprint {fingerprint.strip()}")
        for entry in matches:
            try:
                entry.path.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"cannot remove {entry.path} from the trust store {directory}: {exc}"
                ) from exc
        return matches[0].signer

    def list(self) -> list[TrustedSigner]:
        """Every pinned signer once, sorted by subject, then fingerprint."""
        unique: dict[str, TrustedSigner] = {}
        for entry in self._scan()[0]:
            unique.setdefault(entry.signer.fingerprint, entry.signer)
        return sorted(unique.values(), key=lambda signer: (signer.subject, signer.fingerprint))

    def find(self, cert: x509.Certificate) -> TrustedSigner | None:
        """The pinned signer with ``cert``'s public key, or None.

        A pinned copy of ``cert`` itself is preferred; otherwise ``cert`` must be signed by its
        own key (a renewal), and the pinned certificate of that key valid longest is returned.
        """
        der = cert.public_bytes(serialization.Encoding.DER)
        public_key = cert.public_key()
        if not isinstance(public_key, Ed25519PublicKey):
            return None
        wanted = key_id(public_key)
        same_key = [s for s in self.list() if s.key_id == wanted and _same_key(s, public_key)]
        for signer in same_key:
            if signer.certificate.public_bytes(serialization.Encoding.DER) == der:
                return signer
        if not same_key or not self_signed(cert):
            return None
        return max(same_key, key=lambda signer: signer.not_after)

    def public_keys(self) -> dict[bytes, Ed25519PublicKey]:
        """key_id -> public key of every pinned signer (for watermark verification)."""
        keys: dict[bytes, Ed25519PublicKey] = {}
        for signer in self.list():
            public_key = signer.certificate.public_key()
            if isinstance(public_key, Ed25519PublicKey):
                keys[signer.key_id] = public_key
        return keys

    def is_empty(self) -> bool:
        return not self.list()

    def __repr__(self) -> str:
        where = self._directory if self._directory is not None else list(self._sources)
        return f"TrustStore({where!r})"

    # -- internals -----------------------------------------------------------------------

    def _writable(self, action: str) -> Path:
        if self._directory is None:
            raise UsageError(f"cannot {action} a trust store given with --trust (read-only)")
        return self._directory

    def _scan(self) -> tuple[builtins.list[_Entry], builtins.list[TrustProblem]]:
        entries: builtins.list[_Entry] = []
        problems: builtins.list[TrustProblem] = []
        for source in self._sources:
            if source.is_dir():
                try:
                    files = sorted(p for p in source.iterdir() if p.name.lower().endswith(".pem"))
                except OSError as exc:
                    problems.append(TrustProblem(source, f"cannot list the folder: {exc}"))
                    continue
                for path in files:
                    try:
                        entries.extend(_Entry(signer, path) for signer in _read_signers(path))
                    except KeyFileError as exc:
                        problems.append(TrustProblem(path, _reason(exc, path)))
            elif self._directory is None:
                # A certificate file named explicitly with --trust: the operator must fix it.
                entries.extend(_Entry(signer, source) for signer in _read_signers(source))
            elif source.exists():
                problems.append(TrustProblem(source, "the trust store is not a folder"))
            # A managed store whose folder does not exist yet is simply empty.
        return entries, problems


def normalise_fingerprint(text: str) -> str:
    """``ab:cd:...`` / ``ABCD...`` -> 64 uppercase hex digits; :class:`UsageError` otherwise."""
    cleaned = "".join(text.split()).replace(":", "").upper()
    if len(cleaned) != 64 or not set(cleaned) <= _HEX:
        raise UsageError(
            f"{text.strip()[:100]!r} is not a SHA-256 fingerprint (64 hex digits, colons optional)"
        )
    return cleaned


def _same_key(signer: TrustedSigner, public_key: Ed25519PublicKey) -> bool:
    """The whole key, not only its 8-byte id."""
    pinned = signer.certificate.public_key()
    return isinstance(pinned, Ed25519PublicKey) and (
        pinned.public_bytes_raw() == public_key.public_bytes_raw()
    )


def _read_signers(path: Path) -> list[TrustedSigner]:
    """The signer in one certificate file (exactly one certificate per file)."""
    return [TrustedSigner.from_certificate(load_certificate(path))]


def _reason(exc: KeyFileError, path: Path) -> str:
    message = str(exc)
    for prefix in (f"{path}: ", f"{path} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


__all__ = [
    "SITE_TRUST_DIR",
    "SITE_TRUST_DIR_ENV",
    "TRUST_DIR_ENV",
    "TrustProblem",
    "TrustStore",
    "TrustedSigner",
    "normalise_fingerprint",
]

"""The sender's certificate, from a certificate file or from a disc the sender signed."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from discmaker.crypto import signing
from discmaker.disc.source import open_source
from discmaker.errors import DiscError, UsageError
from discmaker.format.manifest import SIGNER_PATH

#: A certificate is about a kilobyte; anything past this on a disc is not one.
MAX_CERTIFICATE_BYTES = 64 << 10

_ISO_MAGIC_OFFSET = 16 * 2048 + 1  # the primary volume descriptor's "CD001"


def sender_certificate(source: Path) -> x509.Certificate:
    """The certificate in the file ``source``, or the signer's certificate (DISCSIG/SIGNER.PEM)
    on the disc, ISO image or folder ``source``, read as hostile input.

    Raises :class:`UsageError` when ``source`` does not exist or carries no certificate,
    :class:`KeyFileError` when a file is not a certificate (a private key above all), and
    :class:`DiscError` when the certificate a disc carries cannot be read.
    """
    if source.is_file():
        try:
            with open(source, "rb") as fp:
                fp.seek(_ISO_MAGIC_OFFSET)
                is_iso = fp.read(5) == b"CD001"
        except OSError as exc:
            raise UsageError(f"{source} cannot be read ({exc.strerror or exc})") from None
        if not is_iso:
            return signing.load_certificate(source)
    elif not source.exists():
        raise UsageError(f"{source} does not exist; give a certificate file or a disc")
    with open_source(source) as disc:
        try:
            data = disc.read_bytes(SIGNER_PATH, limit=MAX_CERTIFICATE_BYTES)
        except DiscError as exc:
            raise UsageError(
                f"{source} carries no sender certificate ({SIGNER_PATH}): it is not a signed "
                f"discmaker disc ({exc}). Ask the sender for their certificate file."
            ) from exc
    return signing.load_certificate_bytes(data)


__all__ = ["MAX_CERTIFICATE_BYTES", "sender_certificate"]

"""Read a freshly burned disc back and check it, as the receiving clinic will."""

from __future__ import annotations

import time

from discmaker.check.verify import Progress, check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.disc.burn import STDIO_PREFIX, readable_path
from discmaker.errors import DiscError
from discmaker.models import CheckReport


def verify_burn(
    drive: str,
    trust: TrustStore,
    *,
    progress: Progress | None = None,
    attempts: int = 3,
    delay: float = 3.0,
    workers: int = 1,
) -> CheckReport:
    """Read the burned disc back and check it; returns the report (``report.ok`` when done).

    A drive may need a moment after burning before the new disc reads, so an unreadable disc
    is retried ``attempts`` times ``delay`` seconds apart before :class:`DiscError` is raised.
    ``workers`` is passed to :func:`check_disc`.
    """
    path = readable_path(drive)
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return check_disc(path, trust=trust, progress=progress, workers=workers)
        except DiscError:
            if attempt >= attempts or drive.startswith(STDIO_PREFIX):
                raise
            time.sleep(delay)
    raise DiscError(f"{drive} could not be read back")  # pragma: no cover (loop returns)


__all__ = ["verify_burn"]

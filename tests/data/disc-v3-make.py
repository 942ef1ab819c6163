"""Make the format-v3 disc fixture with the code of the v3 release (run from a v3 checkout)."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

from discmaker.author.create import AuthorRequest, author
from discmaker.crypto import signing
from discmaker.sample import write_sample_study

T = datetime(2026, 1, 2, 10, 0, 0, tzinfo=UTC)
root = Path("/tmp/v3gen")
for p in ("study", "disc"):
    shutil.rmtree(root / p, ignore_errors=True)
write_sample_study(root / "study", ct_slices=2, ct_size=256, mr_slices=1, mr_size=256)
ident = signing.generate_identity("Format v3 Imaging Centre", now=T)
res = author(
    AuthorRequest(
        inputs=(root / "study",),
        out=root / "disc",
        key=ident.private_key,
        cert=ident.certificate,
        timestamp=T,
        workers=1,
        format="folder",
        label="V3DISC",
    )
)
print(res)

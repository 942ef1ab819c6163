"""`make demo`: author a disc from a generated, PHI-free study, check it, show the result.

Everything happens through the real commands (the same `main` the console script runs), in
one output folder that the demo owns and recreates on every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console

from discmaker.crypto import signing
from discmaker.sample import write_sample_study
from discmaker.ui import cli

DEMO_PASSPHRASE = "demo-passphrase-not-for-real-use"


def run(out: Path, console: Console) -> int:
    if out.exists():
        if not (out / ".discmaker-demo").exists():
            console.print(f"[red]{out} exists and is not a demo folder; choose another --out.[/]")
            return 64
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".discmaker-demo").write_text("created by make demo; safe to delete\n")
    study, keys = out / "study", out / "keys"

    console.rule("[bold]1. A generated sample study (no patient data)")
    paths = write_sample_study(study, ct_slices=24, ct_size=512, mr_slices=12, mr_size=256)
    console.print(f"{len(paths)} DICOM files (CT 512x512 x 24, MR 256x256 x 12) in {study}")

    os.environ[signing.PASSPHRASE_ENV] = DEMO_PASSPHRASE
    console.rule("[bold]2. The imaging centre's signing identity")
    code = cli.main(["keygen", "--org", "Demo Imaging Centre", "--out", str(keys)], console=console)
    if code:
        return code

    console.rule("[bold]3. Author the patient disc")
    iso = out / "disc.iso"
    args = ["author", str(study), "--key", str(keys / "key.pem"), "--cert", str(keys / "cert.pem")]
    code = cli.main([*args, "--out", str(iso), "--label", "DEMO_DISC"], console=console)
    if code:
        return code

    console.rule("[bold]4. Check it as the receiving clinic would")
    report = out / "report.html"
    code = cli.main(
        ["check", str(iso), "--trust", str(keys / "cert.pem"), "--report", str(report)],
        console=console,
    )
    console.rule("[bold]Where everything is")
    console.print(f"study      {study}")
    console.print(f"keys       {keys}  (demo passphrase: {DEMO_PASSPHRASE})")
    console.print(f"disc image {iso}")
    console.print(f"report     {report}")
    console.print(
        "Try tampering: copy the ISO contents, edit a PatientName with any tag editor, then "
        f"run: .venv/bin/discmaker check <folder> --trust {keys / 'cert.pem'}"
    )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)
    return run(args.out, Console(highlight=False, emoji=False))


if __name__ == "__main__":
    sys.exit(main())

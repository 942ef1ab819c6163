"""Seeded structure-aware fuzzing of the checker in-process: the fast variant of ``python -m fuzz``.

Every case copies a genuine disc, applies one hostile mutation (``fuzz.mutate``) and calls
``check_disc``. A report, or a ``DiscmakerError`` other than ``InternalError``, is acceptable;
any other exception, an ``InternalError`` or a case taking longer than ``CASE_TIMEOUT_S`` is a
failure. The mutations meant to hang or to be huge (FIFOs, /dev/zero, 100 MB padding) are left
to the subprocess fuzzer, which measures time and memory.

``FUZZ_CASES`` (default 200) and ``FUZZ_SEED`` (default 1) choose the cases; the cases are
split over two chunks so that ``pytest -n 2`` runs them on two cores.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.errors import DiscmakerError, InternalError
from fuzz.fixture import Fixture, build_fixture
from fuzz.mutate import make_case

CASES = int(os.environ.get("FUZZ_CASES", "200"))
SEED = int(os.environ.get("FUZZ_SEED", "1"))
CHUNKS = 2
CASE_TIMEOUT_S = 20


class _CaseTimeout(Exception):
    pass


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return build_fixture(tmp_path_factory.mktemp("fuzz-genuine"))


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _CaseTimeout(f"case took longer than {CASE_TIMEOUT_S} s")


def _check(target: Path, trust: TrustStore) -> None:
    kwargs: dict[str, object] = {"trust": trust}
    if "workers" in inspect.signature(check_disc).parameters:
        kwargs["workers"] = 1
    check_disc(target, **kwargs)  # type: ignore[arg-type]


def _indices(chunk: int) -> Iterator[int]:
    return (i for i in range(CASES) if i % CHUNKS == chunk)


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("seed", [SEED])
def test_hostile_discs_end_in_a_verdict(
    genuine: Fixture, tmp_path: Path, seed: int, chunk: int
) -> None:
    trust = TrustStore.from_paths([genuine.cert])
    failures: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for index in _indices(chunk):
            with warnings.catch_warnings():  # writing invalid values makes pydicom warn
                warnings.simplefilter("ignore")
                case = make_case(genuine, seed, index, tmp_path, fast=True)
            # The check itself runs with warnings as errors (pytest config): none may escape.
            signal.alarm(CASE_TIMEOUT_S)
            try:
                _check(case.target, trust)
            except InternalError as exc:
                failures.append(_describe(case.cls, seed, index, case.description, exc))
            except DiscmakerError:
                pass
            except Exception as exc:
                failures.append(_describe(case.cls, seed, index, case.description, exc))
            finally:
                signal.alarm(0)
            shutil.rmtree(case.workdir, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} hostile discs broke the checker:\n" + "\n".join(failures)


def _describe(cls: str, seed: int, index: int, description: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "discmaker" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name}" if ours else "?"
    return (
        f"- seed {seed} case {index} ({cls}): {type(exc).__name__}: {str(exc)[:160]} at {where}\n"
        f"    mutation: {description[:240]}"
    )

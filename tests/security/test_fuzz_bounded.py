"""The bounded fuzz run of `make test`: every default target of tests/fuzz for a few seconds
through the real runner (`python -m tests.fuzz`), plus proof that the runner reports a crash,
keeps its input and replays it, and the seeds of every target pass in this process.

Longer runs are `make fuzz`. Inputs the fuzzers found are kept below as fixed regression cases.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.sql import parse_statements
from tests.fuzz import DEFAULT_TARGETS, Target

ROOT = Path(__file__).resolve().parents[2]
SECONDS_PER_TARGET = 3

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris is not installed"
)


def _runner(*arguments: str, work_dir: Path) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--work-dir", str(work_dir), *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("target", DEFAULT_TARGETS, ids=lambda target: target.name)
def test_target_runs_clean(target: Target, tmp_path: Path) -> None:
    done = _runner(
        "--target",
        target.name,
        "--seconds",
        str(SECONDS_PER_TARGET),
        "--quick",
        "--seed",
        "1",
        work_dir=tmp_path,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    first = done.stdout.splitlines()[0].split()
    assert first[0] == target.name and first[1] in ("ok", "skipped"), report[-2000:]
    if first[1] == "ok":
        assert int(first[2]) > 0, "the target ran no input at all"


def test_the_runner_reports_a_crash_and_keeps_its_input(tmp_path: Path) -> None:
    done = _runner("--target", "selftest_crash", "--seconds", "2", work_dir=tmp_path)
    assert done.returncode == 1
    assert "selftest_crash  failed" in done.stdout
    assert "uncaught exception" in done.stdout
    kept = sorted((tmp_path / "crashes" / "selftest_crash").glob("crash-*"))
    assert kept and kept[0].read_bytes().startswith(b"crash")
    assert f"--reproduce {kept[0]}" in done.stdout
    # The kept input replays as a failure; a harmless one does not.
    replay = _runner("--target", "selftest_crash", "--reproduce", str(kept[0]), work_dir=tmp_path)
    assert replay.returncode != 0
    harmless = tmp_path / "harmless"
    harmless.write_bytes(b"fine")
    assert (
        _runner(
            "--target", "selftest_crash", "--reproduce", str(harmless), work_dir=tmp_path
        ).returncode
        == 0
    )


@pytest.mark.parametrize("target", DEFAULT_TARGETS, ids=lambda target: target.name)
def test_every_seed_passes_in_process(target: Target) -> None:
    module = importlib.import_module(target.module)
    reason = getattr(module, "skip_reason", lambda: None)()
    if reason:
        pytest.skip(reason)
    seeds = list(module.seeds())
    assert seeds
    for seed in seeds:
        assert len(seed) <= target.max_len
        module.test_one_input(seed)


@pytest.mark.parametrize(
    "name",
    [
        "tests.fuzz",
        "tests.fuzz.__main__",
        "tests.fuzz._worker",
        *sorted({t.module for t in DEFAULT_TARGETS if t.name != "codec"}),
        "tests.fuzz.selftest_crash",
        "tests.security.leakage_table",
    ],
)
def test_doctests(name: str) -> None:
    failed, attempted = doctest.testmod(importlib.import_module(name))
    assert failed == 0 and attempted > 0


# ---- inputs the fuzzers found, kept as regression cases -----------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "!" * 400 + "1",
        "SELECT " + "(" * 600 + "1" + ")" * 600,
        "SELECT " + "NOT " * 600 + "TRUE",
    ],
    ids=["unary-run", "parentheses", "not-chain"],
)
def test_deeply_nested_sql_is_a_programming_error(sql: str) -> None:
    # Found by the sql target: deep nesting used to escape parse_statements as RecursionError.
    try:
        parse_statements(sql)
    except engine.ProgrammingError:
        pass
    # Parsing may also succeed; what matters is that nothing but a PEP 249 error escapes.

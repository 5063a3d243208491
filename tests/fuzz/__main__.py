"""The fuzz runner: `python -m tests.fuzz [--seconds N] [--target NAME]... [--reproduce FILE]`.

It runs each target in its own atheris process, prints runs and crash inputs per target, keeps
the corpus and crash inputs under tests/fuzz/work/ (git-ignored) and exits 1 on any crash or
hang. `--seconds` is the total time, shared evenly. It must not import the targets itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import DEFAULT_TARGETS, TARGETS, Target, target_named

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK_DIR = Path(__file__).resolve().parent / "work"
SKIPPED_EXIT = 3  # tests.fuzz._worker.SKIPPED_EXIT; not imported, since that imports atheris
# libFuzzer's exit statuses: an uncaught Python exception, a per-input timeout, out of memory.
_FAILURE_KINDS = {77: "uncaught exception", 70: "timeout (hang)", 71: "out of memory"}
# Process start, imports and instrumentation of sqlglot take seconds on a busy machine.
STARTUP_SLACK_SECONDS = 240
_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)|Done (\d+) runs")
_ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")


@dataclass
class TargetResult:
    """What one target's run came to: `status` is ok, skipped or failed."""

    name: str
    status: str
    runs: int
    crash_inputs: list[Path]
    seconds: float
    detail: str = ""


def _worker_command(target: Target, *own: str) -> list[str]:
    return [sys.executable, "-m", "tests.fuzz._worker", target.name, *own]


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


def parse_runs(output: str) -> int:
    """The number of inputs libFuzzer ran, from its final statistics (0 when absent).

    >>> parse_runs("#2 INITED\\nDone 517 runs in 2 second(s)\\nstat::number_of_executed_units: 518")
    518
    >>> parse_runs("no statistics")
    0
    """
    found = [int(a or b) for a, b in _RUNS.findall(output)]
    return found[-1] if found else 0


def run_target(
    target: Target,
    seconds: int,
    work_dir: Path,
    *,
    input_timeout: int,
    seed: int | None,
    quick: bool,
) -> TargetResult:
    """Fuzz one target for `seconds` in a subprocess and collect what it found."""
    corpus = work_dir / "corpus" / target.name
    seeds = work_dir / "seeds" / target.name
    crashes = work_dir / "crashes" / target.name
    shutil.rmtree(seeds, ignore_errors=True)
    for directory in (corpus, seeds, crashes):
        directory.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    own = ["--seed-dir", str(seeds), "--dict-file", str(work_dir / f"{target.name}.dict")]
    if quick:
        own.append("--quick")
    libfuzzer = [
        f"-max_total_time={seconds}",
        f"-timeout={input_timeout}",
        f"-max_len={target.max_len}",
        "-print_final_stats=1",
        f"-artifact_prefix={crashes}{os.sep}",
    ]
    if seed is not None:
        libfuzzer.append(f"-seed={seed}")
    command = [*_worker_command(target, *own), "--", *libfuzzer, str(corpus), str(seeds)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=seconds + STARTUP_SLACK_SECONDS,
        )
        output, status = done.stdout, done.returncode
    except subprocess.TimeoutExpired as expired:
        raw = expired.stdout or ""
        output = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        status = None
    elapsed = time.monotonic() - started
    found = sorted(
        path for path in set(crashes.iterdir()) - before if path.name.startswith(_ARTIFACT_PREFIXES)
    )
    runs = parse_runs(output)
    if status == 0 and not found:
        return TargetResult(target.name, "ok", runs, [], elapsed)
    if status == SKIPPED_EXIT:
        reason = output.strip().splitlines()[-1] if output.strip() else "skipped"
        return TargetResult(target.name, "skipped", 0, [], elapsed, reason)
    kind = (
        "the process did not end in time"
        if status is None
        else _FAILURE_KINDS.get(status, f"exit status {status}")
    )
    tail = "\n".join(output.splitlines()[-60:])
    return TargetResult(target.name, "failed", runs, found, elapsed, f"{kind}\n{tail}")


def _report(result: TargetResult) -> None:
    print(
        f"{result.name:<15} {result.status:<8} {result.runs:>10} runs "
        f"{len(result.crash_inputs):>3} crash inputs {result.seconds:7.1f} s",
        flush=True,
    )
    if result.status == "skipped":
        print(f"    {result.detail}", flush=True)
    if result.status == "failed":
        print(result.detail, flush=True)
        for path in result.crash_inputs:
            print(
                f"    crash input: {path}\n    reproduce: python -m tests.fuzz --target "
                f"{result.name} --reproduce {path}",
                flush=True,
            )


def reproduce(target: Target, path: Path) -> int:
    """Run one saved input through a target; its exit status is the worker's."""
    command = [*_worker_command(target), "--", str(path.resolve())]
    return subprocess.run(command, cwd=ROOT, env=_environment(), check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Run the atheris fuzz targets, each in its own process.",
    )
    parser.add_argument(
        "--seconds",
        type=int,
        default=60,
        help="total fuzzing time, shared evenly by the selected targets (at least 1 s each)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=[target.name for target in TARGETS],
        help="run only this target (repeatable); default: every default target",
    )
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument(
        "--input-timeout", type=int, default=10, help="seconds one input may take (a hang)"
    )
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed, for repeatable runs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="instrument only EnclaveSQL's own code (faster start, less guidance)",
    )
    parser.add_argument("--reproduce", type=Path, help="run this one saved input and exit")
    options = parser.parse_args(argv)
    targets = [target_named(name) for name in options.target] if options.target else DEFAULT_TARGETS
    if options.reproduce is not None:
        if len(targets) != 1:
            parser.error("--reproduce needs exactly one --target")
        return reproduce(targets[0], options.reproduce)
    if options.seconds < 1:
        parser.error("--seconds must be at least 1")
    share = max(1, options.seconds // len(targets))
    results = []
    for target in targets:
        result = run_target(
            target,
            share,
            options.work_dir.resolve(),
            input_timeout=options.input_timeout,
            seed=options.seed,
            quick=options.quick,
        )
        _report(result)
        results.append(result)
    failed = [result.name for result in results if result.status == "failed"]
    if failed:
        print(f"fuzzing found crashes or hangs in: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: enclave predicates as native DuckDB functions against the Python UDFs they replace.

The same TPC-H queries run through engine.connect on the bench's cached product database
(bench/data/sf<sf>/enclavesql, built by ``python -m bench``), once with the native extension
(enclave/enclavesql_udfs.duckdb_extension) and once with ENCLAVESQL_NATIVE_UDFS=0. One process
cannot hold both (the extension is loaded per database), so each path runs in a worker process,
and the workers alternate (native, python, native, python) so that a noisy stretch of the
machine hits both. It never runs in the tests.
    python -m bench.native_predicates [--sf 0.1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.baselines import Q6_SQL
from bench.machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent / "data"
QUERIES = {
    "range_1pct": "SELECT count(*) FROM {lineitem} WHERE l_shipdate BETWEEN DATE '1995-03-01' "
    "AND DATE '1995-03-25'",
    "range_50pct": "SELECT count(*) FROM {lineitem} WHERE l_quantity <= 25",
    "q6": Q6_SQL,
    "like": "SELECT count(*) FROM {customer} WHERE c_name LIKE '%99%'",
}


def _worker(sf: str, repeat: int) -> dict[str, Any]:
    """Median milliseconds per query on this process's path (after one warm-up run)."""
    import engine

    folder = DATA / f"sf{sf}" / "enclavesql"
    os.environ.setdefault("ENCLAVESQL_PLATFORM_DIR", str(DATA / f"sf{sf}" / "enclave-platform"))
    warnings.simplefilter("ignore")
    con = engine.connect(
        str(folder / "tpch.duckdb"), key_dir=str(folder / "keys"), attestation_protocol="none"
    )
    con.execute("SET threads=2")
    times: dict[str, float] = {}
    answers: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        text = sql.format(lineitem="lineitem", customer="customer")
        answers[name] = repr(con.execute(text).fetchall())
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            con.execute(text).fetchall()
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs) * 1000
    native = bool(con._host.native_filters)  # noqa: SLF001 - which path really ran
    con.close()
    return {"native": native, "ms": times, "answers": answers}


def _run_worker(path: str, sf: str, repeat: int) -> dict[str, Any]:
    environment = dict(os.environ, ENCLAVESQL_NATIVE_UDFS="1" if path == "native" else "0")
    command = [sys.executable, "-m", "bench.native_predicates", "--worker", "--sf", sf]
    command += ["--repeat", str(repeat)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", default="0.1", help="TPC-H scale factor of the cached data")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query and worker")
    parser.add_argument("--rounds", type=int, default=2, help="native/python worker pairs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.sf, args.repeat)))
        return 0
    if not (DATA / f"sf{args.sf}" / "enclavesql" / "tpch.duckdb").is_file():
        print(f"no cached product database for SF {args.sf}: run python -m bench --sf {args.sf}")
        return 2
    runs: dict[str, list[dict[str, Any]]] = {"native": [], "python": []}
    for _ in range(args.rounds):
        for path in ("native", "python"):
            runs[path].append(_run_worker(path, args.sf, args.repeat))
    if not all(run["native"] for run in runs["native"]) or any(r["native"] for r in runs["python"]):
        print("a worker did not run the path it was asked for (is the extension built?)")
        return 1
    rows = []
    print(f"{'query':<12} {'native ms':>10} {'python ms':>10} {'python/native':>14}  same answer")
    for name in QUERIES:
        native = statistics.median(run["ms"][name] for run in runs["native"])
        python = statistics.median(run["ms"][name] for run in runs["python"])
        same = len({run["answers"][name] for path in runs.values() for run in path}) == 1
        rows.append({"query": name, "native_ms": native, "python_ms": python, "same": same})
        print(f"{name:<12} {native:>10.1f} {python:>10.1f} {python / native:>13.2f}x  {same}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    out = RESULTS / f"native_predicates-{stamp}-sf{args.sf}.json"
    out.write_text(
        json.dumps({"machine": describe_machine(), "sf": args.sf, "rows": rows}, indent=2)
    )
    print(f"wrote {out.relative_to(RESULTS.parent.parent)}")
    return 0 if all(row["same"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

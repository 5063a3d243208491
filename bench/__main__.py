"""`python -m bench`: the whole benchmark suite in one run, as `make bench` calls it.

It runs the codec, enclave-operator, SQL-layer and rotation suites, prepares TPC-H data (cached)
and times every TPC-H case in every variant (the product, `enclavesql`, included), prints one
table and writes bench/results/<date>-sf<sf>.json and the chart. It never runs in `make test`.
    python -m bench [--sf 0.1] [--quick] [--only CASE,...] [--repeat N]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import baselines, report, suite_rows, tpch
from bench.machine import describe_machine

QUICK_SF = 0.01
# Suites written as their own modules, each with run(quick) -> dict, in the order they run.
SUITES = ("codec", "enclave_ops", "sql_layer", "rotation")
CODEC_CASES = ("codec",)
ALL_CASES = SUITES + baselines.CASE_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --quick means SF 0.01, 2 repetitions and a small pyca sample.

    >>> args = parse_args(["--quick", "--only", "q6,codec"])
    >>> args.sf, args.repeat, args.only
    (0.01, 2, ['q6', 'codec'])
    """
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sf", type=float, default=None, help="TPC-H scale factor (0.1)")
    parser.add_argument("--quick", action="store_true", help="SF 0.01, fewer repetitions")
    parser.add_argument(
        "--only", default=None, help=f"comma-separated cases of: {','.join(ALL_CASES)}"
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions (5)")
    parser.add_argument(
        "--pyca-sample", type=int, default=None, help="rows the pyca client decrypts (20000)"
    )
    parser.add_argument("--no-growth", action="store_true", help="skip the 3-size growth runs")
    parser.add_argument(
        "--no-enclavesql", action="store_true", help="leave the product's variant out"
    )
    parser.add_argument("--results", type=Path, default=report.RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sf = args.sf if args.sf is not None else (QUICK_SF if args.quick else 0.1)
    args.repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    args.pyca_sample = args.pyca_sample or (3_000 if args.quick else 20_000)
    args.only = args.only.split(",") if args.only else list(ALL_CASES)
    unknown = sorted(set(args.only) - set(ALL_CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {','.join(ALL_CASES)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def codec_rows(codec: dict[str, Any]) -> list[report.Row]:
    """The codec suite's rates as rows: seconds for its batch of cells, per implementation.

    >>> codec = {"results": {"fast": {"implementation": "aesni-shani", "cells": 1000,
    ...     "decrypt": {"median": 10.0, "min": 8.0, "max": 12.5},
    ...     "encrypt_randomized": {"median": 5.0, "min": 4.0, "max": 5.0}}}}
    >>> row = codec_rows(codec)[0]
    >>> row["variant"], row["median_s"], row["min_s"], row["max_s"]
    ('codec_fast', 0.0001, 8e-05, 0.000125)
    """
    rows = []
    for operation, case in (("decrypt", "codec_decrypt"), ("encrypt_randomized", "codec_encrypt")):
        for name, measured in codec["results"].items():
            rate = measured[operation]
            cells = measured["cells"]
            # The rate's max is the fastest run, so it gives the shortest time.
            row = report.make_row(case, f"codec_{name}", [cells / (rate["median"] * 1e6)], cells)
            row["min_s"] = cells / (rate["max"] * 1e6)
            row["max_s"] = cells / (rate["min"] * 1e6)
            row["note"] = (
                f"{rate['median']:.3g} M cells/s, 8 B, one core ({measured['implementation']})"
            )
            rows.append(row)
    return rows


def _log(line: str) -> None:
    print(line, flush=True)


def run_suite(name: str, quick: bool) -> dict[str, Any]:
    """Runs one of the separately written suites (bench.<name>.run) and returns its result."""
    import importlib

    module = importlib.import_module(f"bench.{name}")
    result: dict[str, Any] = module.run(quick) if name != "rotation" else module.run(quick, None)
    return result


SUITE_ROWS: dict[str, Callable[[dict[str, Any]], list[report.Row]]] = {
    "enclave_ops": suite_rows.enclave_ops_rows,
    "sql_layer": suite_rows.sql_layer_rows,
    "rotation": suite_rows.rotation_rows,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    from engine.client.enclave_session import InsecureEnclaveWarning

    # Every enclave session of the bench is unattested (protocol "none") on purpose: it
    # measures cost, not trust. Said once here instead of once per connection.
    warnings.simplefilter("ignore", InsecureEnclaveWarning)
    _log("bench: enclave sessions use attestation protocol 'none' (unattested)")
    rows: list[report.Row] = []
    codec = None
    suites: dict[str, Any] = {}
    for name in SUITES:
        if name not in args.only:
            continue
        _log(f"bench: {name} suite")
        if name == "codec":
            codec = run_suite(name, args.quick)
            rows += codec_rows(codec)
            continue
        try:
            suites[name] = run_suite(name, args.quick)
        except baselines.BenchFailure:
            raise
        except Exception as error:  # noqa: BLE001 - a broken suite is reported, not hidden
            traceback.print_exc()
            rows.append(suite_rows.failed_suite_row(name, error))
            continue
        rows += SUITE_ROWS[name](suites[name])
    cases = [case for case in args.only if case in baselines.CASE_NAMES]
    if cases:
        database, keys = tpch.prepare(args.sf, log=_log)
        con = baselines.connect(database)
        ctx = baselines.Context(
            con=con,
            keys=keys,
            parquet=database.parent / "parquet",
            repeat=args.repeat,
            pyca_sample=args.pyca_sample,
            growth=not args.no_growth,
        )
        if not args.no_enclavesql:
            from bench.enclavesql import EnclaveSQLVariant

            lineitem_rows = int(con.execute("SELECT count(*) FROM lineitem").fetchall()[0][0])
            try:
                ctx.product = EnclaveSQLVariant(
                    database.parent, con, prefixes=tpch.sizes(lineitem_rows)[:-1], log=_log
                )
            except Exception as error:  # noqa: BLE001 - reported as a row, the baselines go on
                traceback.print_exc()
                rows.append(suite_rows.failed_suite_row("enclavesql", error))
        try:
            rows += baselines.run(ctx, cases, log=_log)
        finally:
            if ctx.product is not None:
                ctx.product.close()
            con.close()
        if codec is not None:
            rows += baselines.codec_floor_rows(ctx.cells, codec, ctx.floor_seconds)
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = report.build_result(
        rows,
        codec,
        sf=args.sf,
        quick=args.quick,
        repeat=args.repeat,
        machine=describe_machine(),
        command=command.strip(),
        partial=set(args.only) != set(ALL_CASES) or args.no_enclavesql,
    )
    result["suites"] = suites
    print()
    print(report.format_table(result["rows"], result["targets"]))
    path = report.write_json(result, args.results)
    print(f"\nresults: {path}")
    from bench import chart

    for written in chart.write_chart(result, args.results):
        print(f"chart: {written}")
    print(f"bench: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

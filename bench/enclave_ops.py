"""Benchmark of the enclave operators against the codec's decrypt-only rate, in M cells/s.

It measures, side by side in one run and on one thread, compare (LT with a constant), LIKE and
SUM over 8-byte and 32-byte plaintexts, and decrypt-only of the very same cells through the
codec, which is the ceiling an operator can approach (target: compare >= 80% of it). It opens
its own enclave session in a temporary platform directory and never runs in the test suite.
    python -m bench.enclave_ops [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives import serialization

from bench.machine import describe_machine
from enclave import binding
from enclave.attestation.evidence import parse_evidence
from engine.client.session_key import derive_session_key, new_client_ecdh_key

CEK = bytes(range(32))
RESULTS = Path(__file__).resolve().parent / "results"
COMPARE_TARGET = 0.8  # compare rate / decrypt-only rate
STATEMENT = "bench"


def _rate(work: Callable[[], object], cells: int, repeats: int) -> float:
    """Median throughput in M cells/s over `repeats` timed runs, after a warm-up run."""
    work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(cells / (time.perf_counter() - start) / 1e6)
    return round(statistics.median(rates), 3)


def _binary(raw: Any, width: int, count: int) -> Any:
    offsets = np.arange(0, width * count + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(raw)]
    )


def _texts(width: int, count: int) -> Any:
    """count ASCII strings of `width` letters, built with numpy (no per-row Python)."""
    rng = np.random.default_rng(width)
    raw = rng.integers(ord("a"), ord("z") + 1, width * count, dtype=np.uint8)
    return _binary(raw, width, count)


def _integers(count: int) -> Any:
    raw = np.arange(count, dtype="<i8").view(np.uint8)
    return _binary(raw, 8, count)


def _package(
    session_id: int, session_key: bytes, counter: int, grants: list[tuple[int, int, bytes]]
) -> bytes:
    """The enclave package (enclave.h, ee_enclave_begin_query), written out here directly."""
    blob = os.urandom(16) + struct.pack("<q", counter)
    blob += hashlib.sha256(STATEMENT.encode("utf-16-le")).digest()
    blob += struct.pack("<H", 1) + bytes(12) + struct.pack("<H", 1) + CEK
    blob += struct.pack("<H", len(grants))
    for operator, type_code, constant in grants:
        blob += struct.pack("<HBB", 1, operator, type_code) + hashlib.sha256(constant).digest()
    with binding.CellKey(session_key) as key:
        sealed = _cell(key, blob)
    return struct.pack("<Q", session_id) + sealed


def _cell(key: binding.CellKey, plaintext: bytes) -> bytes:
    cells = binding.encrypt_cells(key, pa.array([plaintext], pa.binary()), deterministic=False)
    value = cells[0].as_py()
    assert isinstance(value, bytes)
    return value


def _measure_width(
    key: binding.CellKey,
    session_id: int,
    session_key: bytes,
    counter: int,
    width: int,
    count: int,
    repeats: int,
) -> dict[str, Any]:
    """One row: decrypt-only, compare, LIKE (and SUM for 8 bytes) over the same cells."""
    texts = binding.encrypt_cells(key, _texts(width, count), deterministic=False)
    comparand = _cell(key, b"m" * width)
    pattern = struct.pack("<I", 0) + _cell(key, b"%ab%")
    grants: list[tuple[int, int, bytes]] = [
        (binding.OP_LT, binding.TYPE_UTF8, comparand),
        (binding.OP_LIKE, binding.TYPE_UTF8, pattern),
        (binding.OP_SUM, binding.TYPE_INT64, b""),
    ]
    package = _package(session_id, session_key, counter, grants)
    digest = hashlib.sha256(STATEMENT.encode("utf-16-le")).digest()
    query = binding.begin_query(session_id, package, digest)
    try:
        row: dict[str, Any] = {
            "decrypt_only": _rate(lambda: binding.decrypt_cells(key, texts), count, repeats),
            "compare_lt": _rate(
                lambda: binding.enclave_compare(
                    query, 1, binding.TYPE_UTF8, binding.OP_LT, comparand, texts
                ),
                count,
                repeats,
            ),
            "like": _rate(
                lambda: binding.enclave_compare(
                    query, 1, binding.TYPE_UTF8, binding.OP_LIKE, pattern, texts
                ),
                count,
                repeats,
            ),
            "sum": None,
        }
        if width == 8:
            # SUM needs a number: 8-byte integers, the width of BIGINT's normalized form.
            numbers = binding.encrypt_cells(key, _integers(count), deterministic=False)
            groups = np.zeros(count, dtype=np.int64)
            row["sum"] = _rate(
                lambda: binding.enclave_aggregate(
                    query, 1, binding.TYPE_INT64, binding.OP_SUM, numbers, groups, 1
                ),
                count,
                repeats,
            )
    finally:
        binding.end_query(query)
    row["compare_over_decrypt"] = round(row["compare_lt"] / row["decrypt_only"], 3)
    return row


def run(quick: bool) -> dict[str, Any]:
    """Measures every operator next to decrypt-only; returns the results (also written out)."""
    count, repeats = (100_000, 3) if quick else (1_000_000, 5)
    client = new_client_ecdh_key()
    point = client.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as platform, binding.CellKey(CEK) as key:
        session_id, evidence = binding.open_session(os.urandom(32), point, platform)
        session_key = bytes(derive_session_key(client, parse_evidence(evidence).ecdh_public))
        try:
            for counter, width in enumerate((8, 32), start=1):
                rows[f"{width}_byte"] = _measure_width(
                    key, session_id, session_key, counter, width, count, repeats
                )
        finally:
            binding.close_session(session_id)
    worst = min(row["compare_over_decrypt"] for row in rows.values())
    result = {
        "benchmark": "enclave_ops",
        "unit": "M cells/s, single thread",
        "codec": binding.codec_implementation(),
        "when_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cells": count,
        "machine": describe_machine(),
        "results": rows,
        "targets": {
            "compare_over_decrypt": {
                "target": COMPARE_TARGET,
                "measured": worst,
                "met": worst >= COMPARE_TARGET,
            }
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"enclave_ops-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["written_to"] = str(path)
    return result


def table(result: dict[str, Any]) -> str:
    """The results as a fixed-width text table.

    >>> print(table({"codec": "openssl", "results": {"8_byte": {"decrypt_only": 1.0,
    ...     "compare_lt": 0.9, "like": 0.5, "sum": None, "compare_over_decrypt": 0.9}}}))
    plaintext  decrypt  compare     LIKE      SUM  compare/decrypt   (M cells/s, openssl)
    8_byte       1.000    0.900    0.500        -            0.900
    """
    lines = [
        f"{'plaintext':<9} {'decrypt':>8} {'compare':>8} {'LIKE':>8} {'SUM':>8}  "
        f"{'compare/decrypt':>15}   (M cells/s, {result['codec']})"
    ]
    for name, row in result["results"].items():
        cells = [row["decrypt_only"], row["compare_lt"], row["like"], row["sum"]]
        shown = " ".join(f"{'-' if v is None else format(v, '.3f'):>8}" for v in cells)
        lines.append(f"{name:<9} {shown}  {row['compare_over_decrypt']:>15.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enclave_ops")
    parser.add_argument("--quick", action="store_true", help="100k cells, 3 repetitions")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(table(result))
    target = result["targets"]["compare_over_decrypt"]
    verdict = "met" if target["met"] else "NOT met"
    print(f"compare >= {target['target']:.0%} of decrypt-only: {verdict}")
    print(f"written to {result['written_to']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the cell codec: decrypt-and-verify and encrypt of 8-byte plaintexts, in M cells/s.

It measures, side by side in one run and on one thread, the fast path (AES-NI + SHA-NI), the
portable path (OpenSSL) and a pyca/cryptography loop over enclave/reference.py. It restores the
codec selection it found and never runs as part of the test suite.
    python -m bench.codec [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.machine import describe_machine
from enclave import binding, reference
from engine.errors import NotSupportedError

ROOT_KEY = bytes(range(32))
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"fast_decrypt_mcells": 8.0, "portable_decrypt_mcells": 3.0, "fast_over_pyca": 50.0}


def _plaintexts(count: int) -> Any:
    """count distinct 8-byte little-endian integers as a binary array, built without a loop."""
    raw = np.arange(count, dtype="<u8").view(np.uint8)
    offsets = np.arange(0, 8 * count + 1, 8, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(raw)]
    )


def _rate(work: Callable[[], object], cells: int, repeats: int) -> dict[str, float]:
    """Median, min and max throughput in M cells/s over `repeats` timed runs (after a warm-up)."""
    work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(cells / (time.perf_counter() - start) / 1e6)
    return {
        "median": round(statistics.median(rates), 3),
        "min": round(min(rates), 3),
        "max": round(max(rates), 3),
    }


def _native(name: str, count: int, repeats: int) -> dict[str, Any] | None:
    try:
        binding.use_codec_implementation(name)
    except NotSupportedError:
        return None
    plaintexts = _plaintexts(count)
    with binding.CellKey(ROOT_KEY) as key:
        cells = binding.encrypt_cells(key, plaintexts, deterministic=False)
        if not binding.decrypt_cells(key, cells).equals(plaintexts):
            raise AssertionError(f"{name}: decryption did not round-trip")
        return {
            "implementation": binding.codec_implementation(),
            "cells": count,
            "decrypt": _rate(lambda: binding.decrypt_cells(key, cells), count, repeats),
            "encrypt_deterministic": _rate(
                lambda: binding.encrypt_cells(key, plaintexts, deterministic=True), count, repeats
            ),
            "encrypt_randomized": _rate(
                lambda: binding.encrypt_cells(key, plaintexts, deterministic=False),
                count,
                repeats,
            ),
        }


def _pyca(count: int, repeats: int) -> dict[str, Any]:
    codec = reference.ReferenceCodec(ROOT_KEY)
    values = _plaintexts(count).to_pylist()
    cells = [codec.encrypt(value, os.urandom(16)) for value in values]

    def decrypt() -> None:
        for cell in cells:
            codec.decrypt(cell)

    def deterministic() -> None:
        for value in values:
            codec.encrypt(value, codec.deterministic_iv(value))

    def randomized() -> None:
        for value in values:
            codec.encrypt(value, os.urandom(16))

    return {
        "implementation": "pyca loop (enclave/reference.py)",
        "cells": count,
        "decrypt": _rate(decrypt, count, repeats),
        "encrypt_deterministic": _rate(deterministic, count, repeats),
        "encrypt_randomized": _rate(randomized, count, repeats),
    }


def run(quick: bool) -> dict[str, Any]:
    """Measures every implementation; returns the results (also written to bench/results)."""
    count, pyca_count, repeats = (200_000, 5_000, 3) if quick else (1_000_000, 20_000, 5)
    before = binding.codec_implementation()
    try:
        rows = {
            "fast": _native("fast", count, repeats),
            "portable": _native("portable", count, repeats),
            "pyca": _pyca(pyca_count, repeats),
        }
    finally:
        binding.use_codec_implementation("fast" if before == "aesni-shani" else "portable")
    measured = {name: row for name, row in rows.items() if row is not None}
    fast = measured.get("fast")
    pyca_decrypt = measured["pyca"]["decrypt"]["median"]
    checks: dict[str, Any] = {
        "portable_decrypt_mcells": measured["portable"]["decrypt"]["median"],
        "fast_decrypt_mcells": fast["decrypt"]["median"] if fast else None,
        "fast_over_pyca": round(fast["decrypt"]["median"] / pyca_decrypt, 1) if fast else None,
    }
    result = {
        "benchmark": "codec",
        "unit": "M cells/s, single thread, 8-byte plaintexts",
        "when_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": describe_machine(),
        "results": measured,
        "targets": {
            name: {"target": target, "measured": checks[name], "met": _met(checks[name], target)}
            for name, target in TARGETS.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"codec-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["written_to"] = str(path)
    return result


def _met(measured: float | None, target: float) -> bool | None:
    return None if measured is None else measured >= target


def format_table(result: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [
        f"{'implementation':<34}{'decrypt+verify':>22}{'encrypt det':>22}{'encrypt rnd':>22}",
    ]
    for row in result["results"].values():
        cells = [
            f"{row[op]['median']:.2f} ({row[op]['min']:.2f}-{row[op]['max']:.2f})"
            for op in ("decrypt", "encrypt_deterministic", "encrypt_randomized")
        ]
        lines.append(f"{row['implementation']:<34}" + "".join(f"{c:>22}" for c in cells))
    lines.append("M cells/s, median (min-max); 8-byte plaintexts; one thread")
    for name, check in result["targets"].items():
        lines.append(f"target {name} >= {check['target']}: {check['measured']} met={check['met']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    result = run(parser.parse_args().quick)
    print(format_table(result))
    print(f"written to {result['written_to']}")


if __name__ == "__main__":
    main()

"""Benchmark of CEK rotation: rows/s re-encrypted in the enclave against the client codec's
decrypt+encrypt rate on the same cells, in one run (target: enclave >= 60% of the codec, for
the kernel alone and for the whole in-place rotation of a table, issue #7).

It measures the two kernels on one batch of cells (the enclave's REENCRYPT, and decrypt then
encrypt through engine.client.codec), then whole rotations of a DuckDB table through
engine.rotation.rotate_cek on each path. It uses temporary files and never runs in the tests.
    python -m bench.rotation [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.6  # enclave re-encryption rate / client decrypt+encrypt rate
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


def _median_rate(work: Callable[[], object], rows: int, repeats: int) -> float:
    """Median rows/s over ``repeats`` timed runs after one warm-up run."""
    work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(rows / (time.perf_counter() - start))
    return round(statistics.median(rates))


def _database(directory: Path, rows: int) -> Any:
    import engine
    from engine.client.keystores import build_registry

    build_registry(key_directory=directory).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    con = engine.connect(str(directory / "rotation.duckdb"), key_dir=str(directory))
    con.execute(
        "CREATE COLUMN MASTER KEY cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)"
    )
    for cek in ("cek_a", "cek_b"):
        con.execute(
            f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = cmk, "
            "ALGORITHM = 'RSA_OAEP')"
        )
    con.execute(f"CREATE TABLE t (id INTEGER, v VARCHAR(24) {ENC.format('cek_a', 'RANDOMIZED')})")
    ids = pa.array(range(rows), pa.int32())
    values = pa.compute.binary_join_element_wise("customer-", ids.cast(pa.string()), "")
    con.bulk_insert("t", pa.table({"id": ids, "v": values}), progress=False)
    return con


def run(quick: bool, rows: int | None) -> dict[str, Any]:
    """Measure both kernels and both whole-table paths; write and return the result."""
    from engine.client.rotation import client_transform, enclave_reencryption
    from engine.rotation import open_enclave, rotate_cek
    from engine.sql.plan import EncryptionTarget

    count = rows or (100_000 if quick else 1_000_000)
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory() as scratch:
        con = _database(Path(scratch), count)
        enclave = open_enclave("none", str(Path(scratch) / "platform"))
        try:
            snapshot = con._current_snapshot()
            cells = con._host._con.sql("SELECT v FROM t").to_arrow_table().column(0)
            cells = cells.combine_chunks()
            source = EncryptionTarget("t", "v", "cek_a", "RANDOMIZED", "VARCHAR(24)")
            target = EncryptionTarget("t", "v", "cek_b", "RANDOMIZED", "VARCHAR(24)")
            from engine.sql.alter_column_encryption import ColumnEncryptionChange

            change = ColumnEncryptionChange(
                "t", "v", source, "VARCHAR(24)", target, "VARCHAR(24)", "BLOB", None, (), 0
            )
            key_for = con._client.key_lookup(snapshot)
            codec = client_transform(change, key_for)
            job = enclave_reencryption(
                change, snapshot, enclave.session, con._client.resolver, key_for, "bench"
            )
            gateway = enclave.gateway
            with gateway.query(enclave.session.session_id, job.package, "bench") as query:
                in_enclave = _median_rate(
                    lambda: gateway.reencrypt(
                        query, job.source_cek_id, job.type_code, job.constant, cells
                    ),
                    count,
                    repeats,
                )
            client = _median_rate(lambda: codec(cells), count, repeats)

            tables: dict[str, float] = {}
            # CPU seconds of the process (all threads) per rotation: on a shared machine the
            # wall clock also counts other processes' turns, this does not.
            cpu: dict[str, float] = {}
            for path in ("client", "enclave"):
                start, start_cpu = time.perf_counter(), time.process_time()
                for cek in ("cek_b", "cek_a"):
                    rotate_cek(con, "t", "v", cek, path=path, enclave=enclave, progress=False)
                tables[path] = round(2 * count / (time.perf_counter() - start))
                cpu[path] = round((time.process_time() - start_cpu) / 2, 3)
        finally:
            enclave.session.close()
            con.close()
    ratio = round(in_enclave / client, 3)
    whole = round(tables["enclave"] / client, 3)
    result: dict[str, Any] = {
        "benchmark": "rotation",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "rows": count,
        "cell_plaintext": "VARCHAR(24), about 15 bytes",
        "kernel_rows_per_second": {
            "enclave_reencrypt": in_enclave,
            "client_decrypt_encrypt": client,
        },
        "table_rows_per_second": tables,
        "table_cpu_seconds_per_rotation": cpu,
        "targets": {
            "enclave_over_client": {"target": TARGET, "measured": ratio, "met": ratio >= TARGET},
            # What `python -m bench` reports: the whole rotation (read, REENCRYPT, write back,
            # commit) against the codec kernel's rate.
            "enclave_table_over_client": {
                "target": TARGET,
                "measured": whole,
                "met": whole >= TARGET,
            },
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"rotation-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["written_to"] = str(path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rotation")
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 repetitions")
    parser.add_argument("--rows", type=int, default=None, help="rows to rotate (1M)")
    args = parser.parse_args(argv)
    result = run(args.quick, args.rows)
    kernel = result["kernel_rows_per_second"]
    print(f"{'kernel':<28}{'rows/s':>14}")
    for name, rate in kernel.items():
        print(f"{name:<28}{rate:>14,.0f}")
    print(f"{'whole table, path':<28}{'rows/s':>14}{'CPU s/rotation':>16}")
    for name, rate in result["table_rows_per_second"].items():
        print(f"{name:<28}{rate:>14,.0f}{result['table_cpu_seconds_per_rotation'][name]:>16.3f}")
    for name, what in (
        ("enclave_over_client", "enclave kernel"),
        ("enclave_table_over_client", "whole enclave rotation"),
    ):
        target = result["targets"][name]
        verdict = "met" if target["met"] else "NOT met"
        print(
            f"{what} >= {target['target']:.0%} of client decrypt+encrypt: {verdict} "
            f"({target['measured']:.0%})"
        )
    print(f"written to {result['written_to']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

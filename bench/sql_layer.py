"""Benchmark of the SQL layer against plaintext DuckDB, side by side in one run: bulk_insert
throughput into a table with 4 encrypted columns, the p50 of a deterministic point lookup, and
the p50 of a small parameterized query with a warm describe cache.

Targets: >= 1M rows/s bulk insert, point lookup <= 1.5x plaintext, small query <= +1 ms. Beside
them: the host's DuckDB alone on the ciphertext lookup (the floor under ours), plaintext DuckDB
on the same rows shuffled (no row-group skipping, as ciphertext never has), the lookup with
CREATE INDEX on the deterministic column, and a query whose literal the client lifts, with
another value each run. It prints and returns numbers and never runs as part of the test suite.
    python -m bench.sql_layer [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import engine
from bench.machine import describe_machine
from engine.client.keystores import build_registry

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"bulk_insert_rows_per_s": 1e6, "point_lookup_ratio": 1.5, "small_query_extra_ms": 1.0}
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
COLUMNS = "id INTEGER, ssn VARCHAR{0}, amount BIGINT{1}, day DATE{2}, score DOUBLE{3}"


def _data(rows: int) -> pa.Table:
    """Rows with distinct ssn values, built from numpy without a Python loop over rows."""
    ids = np.arange(rows, dtype=np.int32)
    ssn = pc.binary_join_element_wise("SSN-", pa.array(ids).cast(pa.string()), "")
    return pa.table(
        {
            "id": ids,
            "ssn": ssn,
            "amount": np.arange(rows, dtype=np.int64) * 7,
            "day": pa.array((ids % 20000).astype(np.int32), type=pa.int32()).cast(pa.date32()),
            "score": np.linspace(0.0, 1.0, rows),
        }
    )


def _p50_ms(work: Callable[[], object], repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 4)


def _setup(
    directory: Path, *, in_memory: bool = False
) -> tuple[engine.Connection, duckdb.DuckDBPyConnection]:
    if not (directory / "cmk.pem").exists():
        build_registry(key_directory=directory).get("PEM_FILE").generate_key("cmk.pem")
    database = ":memory:" if in_memory else str(directory / "bench.duckdb")
    con = engine.connect(database, key_dir=str(directory))
    con.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem')"
    )
    con.execute(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    det, rnd = " " + ENC.format("DETERMINISTIC"), " " + ENC.format("RANDOMIZED")
    for name in ("big", "small"):
        con.execute(f"CREATE TABLE {name} ({COLUMNS.format(det, rnd, rnd, rnd)})")
    con.execute(f"CREATE TABLE indexed (id INTEGER, ssn VARCHAR{det} UNIQUE)")
    plain = duckdb.connect(":memory:" if in_memory else str(directory / "plain.duckdb"))
    for name in ("big", "small"):
        plain.execute(f"CREATE TABLE {name} ({COLUMNS.format('', '', '', '')})")
    plain.execute("CREATE TABLE indexed (id INTEGER, ssn VARCHAR UNIQUE)")
    return con, plain


def _insert_rates(
    con: engine.Connection, plain: duckdb.DuckDBPyConnection, data: pa.Table
) -> tuple[float, float]:
    start = time.perf_counter()
    con.bulk_insert("big", data, progress=False)
    ours = data.num_rows / (time.perf_counter() - start)
    plain.register("incoming", data)
    start = time.perf_counter()
    plain.execute("INSERT INTO big SELECT * FROM incoming")
    theirs = data.num_rows / (time.perf_counter() - start)
    plain.unregister("incoming")
    return ours, theirs


def run(quick: bool) -> dict[str, Any]:
    """Measure the three cases; ``quick`` uses 100k rows and fewer repetitions."""
    rows = 100_000 if quick else 1_000_000
    repeats = 20 if quick else 100
    data = _data(rows)
    with tempfile.TemporaryDirectory() as workdir:
        # In memory first: a file database adds DuckDB's writes of incompressible ciphertext
        # (about 4 x 65 bytes a row), which bound the file rate whatever the client does.
        con, plain = _setup(Path(workdir), in_memory=True)
        try:
            memory_rate, plain_memory_rate = _insert_rates(con, plain, data)
        finally:
            con.close()
            plain.close()
        con, plain = _setup(Path(workdir))
        try:
            enclave_rate, plain_rate = _insert_rates(con, plain, data)

            probe = f"SSN-{rows // 2}"
            lookup = "SELECT id, amount FROM big WHERE ssn = ?"
            cursor = con.cursor()
            assert cursor.execute(lookup, [probe]).fetchall()[0][0] == rows // 2
            ours_lookup = _p50_ms(lambda: cursor.execute(lookup, [probe]).fetchall(), repeats)
            theirs_lookup = _p50_ms(lambda: plain.execute(lookup, [probe]).fetchall(), repeats)
            # The floor under ours: the host's DuckDB alone on the same statement, with the
            # ciphertext of the probe as its parameter (no client, no decryption).
            duck = con._host._con
            cell = duck.execute("SELECT ssn FROM big WHERE id = ?", [rows // 2]).fetchone()[0]
            floor_lookup = _p50_ms(lambda: duck.execute(lookup, [cell]).fetchall(), repeats)
            # The plaintext rows are in ssn order, so DuckDB's row-group min/max skips most of
            # the table; ciphertext is random and never can. The same rows shuffled show what
            # a full plaintext scan costs.
            order = pa.array(np.random.default_rng(7).permutation(rows))
            plain.register("incoming", data.take(order))
            plain.execute("CREATE TABLE shuffled AS SELECT * FROM incoming")
            plain.unregister("incoming")
            shuffled = lookup.replace("FROM big", "FROM shuffled")
            theirs_shuffled = _p50_ms(lambda: plain.execute(shuffled, [probe]).fetchall(), repeats)

            # The same lookup with UNIQUE on the column: DuckDB's ART index serves both sides.
            keys = data.select(["id", "ssn"])
            con.bulk_insert("indexed", keys, progress=False)
            plain.register("incoming", keys)
            plain.execute("INSERT INTO indexed SELECT * FROM incoming")
            plain.unregister("incoming")
            unique = "SELECT id FROM indexed WHERE ssn = ?"
            ours_unique = _p50_ms(lambda: cursor.execute(unique, [probe]).fetchall(), repeats)
            theirs_unique = _p50_ms(lambda: plain.execute(unique, [probe]).fetchall(), repeats)

            # CREATE INDEX on the deterministic column (an ART index over ciphertext).
            con.execute("CREATE INDEX big_ssn ON big (ssn)")
            plain.execute("CREATE INDEX big_ssn ON big (ssn)")
            ours_indexed = _p50_ms(lambda: cursor.execute(lookup, [probe]).fetchall(), repeats)
            theirs_indexed = _p50_ms(lambda: plain.execute(lookup, [probe]).fetchall(), repeats)

            small = data.slice(0, 1000)
            con.bulk_insert("small", small, progress=False)
            plain.register("incoming", small)
            plain.execute("INSERT INTO small SELECT * FROM incoming")
            plain.unregister("incoming")
            query = "SELECT ssn, day FROM small WHERE id = ?"
            ours_small = _p50_ms(lambda: cursor.execute(query, [500]).fetchall(), repeats)
            theirs_small = _p50_ms(lambda: plain.execute(query, [500]).fetchall(), repeats)
            # A literal aimed at the encrypted column, another value on every run: the client
            # lifts it out and fills its plan template instead of describing again.
            numbers = itertools.count()

            def lifted(target: Any) -> object:
                text = f"SELECT ssn, day FROM small WHERE ssn = 'SSN-{next(numbers) % 1000}'"
                return target.execute(text).fetchall()

            ours_lifted = _p50_ms(lambda: lifted(cursor), repeats)
            theirs_lifted = _p50_ms(lambda: lifted(plain), repeats)
            statistics_ = {
                **con._host.statistics(),
                "client_describes": con._client.describes,
                "template_hits": con._client.templates.hits,
                "template_misses": con._client.templates.misses,
            }
        finally:
            con.close()
            plain.close()
    result = {
        "rows": rows,
        "bulk_insert_rows_per_s": round(memory_rate),
        "plaintext_insert_rows_per_s": round(plain_memory_rate),
        "bulk_insert_file_rows_per_s": round(enclave_rate),
        "plaintext_insert_file_rows_per_s": round(plain_rate),
        "point_lookup_p50_ms": ours_lookup,
        "plaintext_point_lookup_p50_ms": theirs_lookup,
        "point_lookup_ratio": round(ours_lookup / theirs_lookup, 3),
        "ciphertext_point_lookup_floor_p50_ms": floor_lookup,
        "plaintext_shuffled_point_lookup_p50_ms": theirs_shuffled,
        "point_lookup_ratio_vs_shuffled": round(ours_lookup / theirs_shuffled, 3),
        "indexed_lookup_p50_ms": ours_indexed,
        "plaintext_indexed_lookup_p50_ms": theirs_indexed,
        "indexed_lookup_ratio": round(ours_indexed / theirs_indexed, 3),
        "unique_lookup_p50_ms": ours_unique,
        "plaintext_unique_lookup_p50_ms": theirs_unique,
        "unique_lookup_ratio": round(ours_unique / theirs_unique, 3),
        "small_query_p50_ms": ours_small,
        "plaintext_small_query_p50_ms": theirs_small,
        "small_query_extra_ms": round(ours_small - theirs_small, 4),
        "lifted_literal_query_p50_ms": ours_lifted,
        "plaintext_lifted_literal_query_p50_ms": theirs_lifted,
        "lifted_literal_query_extra_ms": round(ours_lifted - theirs_lifted, 4),
        "describe_cache": statistics_,
        "targets": TARGETS,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, fewer repetitions")
    args = parser.parse_args()
    result = {"machine": describe_machine(), **run(args.quick)}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sql_layer-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""TPC-H data for the benchmarks: generated with tpchgen-cli, loaded into DuckDB, cached on disk.

It owns bench/data/sf<sf>/ (git-ignored): the Parquet files, the bench keys, and one DuckDB file
holding the plaintext tables and their Always Encrypted copies (the encrypted schema below).
It must not time anything and is never imported by the engine or the tests' fast path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from engine.client.codec import encrypt_column

DATA = Path(__file__).resolve().parent / "data"
TABLES = ("lineitem", "customer")
# Bump when the layout of the cached DuckDB file changes, so an old cache is rebuilt.
LAYOUT_VERSION = 2

# The encrypted schema of the benchmark (the target): column -> (declared type, kind).
# c_name is randomized and enclave-enabled so that LIKE has an encrypted column to run on;
# c_phone is deterministic so that the point lookup and the join run on ciphertext equality.
ENCRYPTED: dict[str, dict[str, tuple[str, str]]] = {
    "lineitem": {
        "l_quantity": ("DECIMAL(15,2)", "RANDOMIZED"),
        "l_extendedprice": ("DECIMAL(15,2)", "RANDOMIZED"),
        "l_discount": ("DECIMAL(15,2)", "RANDOMIZED"),
        "l_shipdate": ("DATE", "RANDOMIZED"),
        "l_returnflag": ("VARCHAR(1)", "DETERMINISTIC"),
        "l_linestatus": ("VARCHAR(1)", "DETERMINISTIC"),
    },
    "customer": {
        "c_name": ("VARCHAR(25)", "RANDOMIZED"),
        "c_phone": ("VARCHAR(15)", "DETERMINISTIC"),
    },
}
ROW_ID = {"lineitem": "l_rowid", "customer": "c_rowid"}
# Every WATCHLIST_STEP-th customer's phone goes on the watch list that the join case uses.
WATCHLIST_STEP = 10


@dataclass(frozen=True)
class BenchKeys:
    """The two column encryption keys of the bench schema (random, cached with the data)."""

    # Kept out of repr so that a log line or a traceback never shows key bytes.
    deterministic: bytes = field(repr=False)
    randomized: bytes = field(repr=False)

    def for_kind(self, kind: str) -> bytes:
        """The CEK that encrypts columns of this encryption type.

        >>> keys = BenchKeys(bytes(32), bytes([1]) * 32)
        >>> keys.for_kind("RANDOMIZED") == keys.randomized
        True
        """
        return self.deterministic if kind == "DETERMINISTIC" else self.randomized


def scale_name(sf: float) -> str:
    """The folder name of a scale factor.

    >>> scale_name(0.1), scale_name(1.0), scale_name(0.01)
    ('sf0.1', 'sf1', 'sf0.01')
    """
    return f"sf{sf:g}"


def sizes(total_rows: int, count: int = 3) -> list[int]:
    """Row counts for the cost-growth runs: halving steps that end at the full table.

    >>> sizes(600_000)
    [150000, 300000, 600000]
    >>> sizes(10, count=2)
    [5, 10]
    """
    if count < 1 or total_rows < 1:
        raise ValueError("sizes needs a positive row count and a positive number of sizes")
    return [max(1, total_rows >> shift) for shift in range(count - 1, -1, -1)]


def first_rows(con: duckdb.DuckDBPyConnection, table: str, rows: int) -> str:
    """Materializes the first `rows` rows of a bench table (by row id) once; returns its name.

    Plaintext and encrypted tables share row ids, so prefix tables of both hold the same rows.
    """
    base = table.removesuffix("_enc")
    name = f"{table}_{rows}"
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {name} AS "
        f"SELECT * FROM {table} WHERE {ROW_ID[base]} < {int(rows)} ORDER BY {ROW_ID[base]}"
    )
    return name


def tpchgen_executable() -> str:
    """The tpchgen-cli binary of this environment (the `bench` extra), or a clear error."""
    beside_python = Path(sys.executable).with_name("tpchgen-cli")
    found = str(beside_python) if beside_python.exists() else shutil.which("tpchgen-cli")
    if found is None:
        raise RuntimeError(
            "tpchgen-cli is not installed; install the bench extra: pip install -e '.[bench]'"
        )
    return found


def generate(sf: float, data_dir: Path = DATA, *, log: Callable[[str], None] = print) -> Path:
    """Writes the bench's TPC-H tables as Parquet under data_dir/sf<sf>/parquet once.

    Each table is written to a temporary folder and renamed into place, so an interrupted run
    leaves no half-written file behind that a later run would trust.
    """
    target = data_dir / scale_name(sf) / "parquet"
    target.mkdir(parents=True, exist_ok=True)
    missing = [table for table in TABLES if not (target / f"{table}.parquet").exists()]
    for position, table in enumerate(missing, 1):
        log(f"tpch: generating {table} at SF {sf:g} ({position}/{len(missing)}) ...")
        started = time.perf_counter()
        scratch = target / f".tmp-{table}"
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(
            [
                tpchgen_executable(),
                "parquet",
                f"--scale-factor={sf:g}",
                f"--tables={table}",
                f"--output-dir={scratch}",
                "--quiet",
            ],
            check=True,
        )
        (scratch / f"{table}.parquet").rename(target / f"{table}.parquet")
        shutil.rmtree(scratch)
        log(f"tpch: {table} done in {time.perf_counter() - started:.1f} s")
    return target


def load_keys(folder: Path) -> BenchKeys:
    """The bench CEKs cached in folder/keys.json, created on first use (owner-readable only)."""
    path = folder / "keys.json"
    if not path.exists():
        fresh = {"deterministic": os.urandom(32).hex(), "randomized": os.urandom(32).hex()}
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(fresh, handle)
    stored = json.loads(path.read_text(encoding="utf-8"))
    return BenchKeys(bytes.fromhex(stored["deterministic"]), bytes.fromhex(stored["randomized"]))


def arrow_table(relation: Any) -> pa.Table:
    """A DuckDB result as one pyarrow Table (DuckDB 2 returns a reader from .arrow())."""
    result = relation.arrow()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def encrypt_table(
    table: pa.Table, columns: dict[str, tuple[str, str]], keys: BenchKeys
) -> pa.Table:
    """A copy of `table` whose listed columns are replaced by their AE cells (native codec)."""
    for column, (sql_type, kind) in columns.items():
        cells = encrypt_column(table[column], keys.for_kind(kind), kind, sql_type, column=column)
        table = table.set_column(table.schema.get_field_index(column), column, cells)
    return table


def _build(database: Path, parquet: Path, keys: BenchKeys, log: Callable[[str], None]) -> None:
    scratch = database.with_suffix(".tmp")
    scratch.unlink(missing_ok=True)
    with duckdb.connect(str(scratch)) as con:
        for table in TABLES:
            log(f"tpch: loading {table} into DuckDB and encrypting its AE columns ...")
            plain = arrow_table(con.sql(f"SELECT * FROM read_parquet('{parquet / table}.parquet')"))
            row_ids = pa.array(np.arange(plain.num_rows, dtype=np.int64))
            plain = plain.add_column(0, ROW_ID[table], row_ids)
            encrypted = encrypt_table(plain, ENCRYPTED[table], keys)
            con.register("incoming", plain)
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming")
            con.register("incoming", encrypted)
            con.execute(f"CREATE TABLE {table}_enc AS SELECT * FROM incoming")
            con.unregister("incoming")
        # The join case's other side: phones on a watch list, plaintext and deterministic.
        con.execute(
            f"CREATE TABLE watchlist AS SELECT c_phone AS phone FROM customer "
            f"WHERE c_rowid % {WATCHLIST_STEP} = 0 ORDER BY c_rowid"
        )
        phones = arrow_table(con.sql("SELECT phone FROM watchlist"))
        con.register(
            "incoming", encrypt_table(phones, {"phone": ENCRYPTED["customer"]["c_phone"]}, keys)
        )
        con.execute("CREATE TABLE watchlist_enc AS SELECT * FROM incoming")
        con.unregister("incoming")
        con.execute("CREATE TABLE bench_layout AS SELECT ? AS version", [LAYOUT_VERSION])
    scratch.rename(database)


def _layout_ok(database: Path) -> bool:
    try:
        with duckdb.connect(str(database), read_only=True) as con:
            row = con.execute("SELECT version FROM bench_layout").fetchall()[0]
    except duckdb.Error:
        return False
    return bool(row[0] == LAYOUT_VERSION)


def prepare(
    sf: float, data_dir: Path = DATA, *, log: Callable[[str], None] = print
) -> tuple[Path, BenchKeys]:
    """Generates (once) and loads (once) SF `sf`; returns the DuckDB file and the bench keys.

    The file holds `lineitem`, `customer` (plaintext, with a row id column) and `lineitem_enc`,
    `customer_enc`: the same rows with the ENCRYPTED columns stored as AE cells (BLOB); and
    `watchlist(phone)` with `watchlist_enc`, its deterministic copy under c_phone's key.
    """
    parquet = generate(sf, data_dir, log=log)
    folder = parquet.parent
    database = folder / "tpch.duckdb"
    if not (folder / "keys.json").exists():
        # Cells in a cached database are useless without the keys that made them.
        database.unlink(missing_ok=True)
    keys = load_keys(folder)
    if database.exists() and not _layout_ok(database):
        log(f"tpch: {database} is from another layout or DuckDB version; rebuilding it")
        database.unlink()
    if not database.exists():
        started = time.perf_counter()
        _build(database, parquet, keys, log)
        log(f"tpch: database ready in {time.perf_counter() - started:.1f} s")
    return database, keys

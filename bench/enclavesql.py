"""The `enclavesql` variant of the TPC-H cases: the product itself, through its DB-API.

It builds once, and caches under bench/data/sf<sf>/enclavesql/, an EnclaveSQL database with the
bench's lineitem and customer rows in the encrypted schema (loaded with Connection.bulk_insert),
and runs each case's SQL through engine.connect(..., attestation_protocol="none"). A case the
product refuses becomes a "not supported yet" row; a wrong answer raises BenchFailure. It must
not print tables or write result files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import engine
from bench import tpch
from bench.baselines import (
    BULK_COLUMNS,
    THREADS,
    QueryCase,
    check,
    check_column,
    measure,
)
from bench.report import Row, make_row, unsupported_row

# Bump when the cached database's schema or contents change, so an old cache is rebuilt.
# 2: deterministic columns carry their hidden tag column (docs/sql.md), so lookups use it.
LAYOUT_VERSION = 2
FOLDER = "enclavesql"
CMK = "cmk_bench"
# One CEK per encryption type, as in the plaintext-side bench keys, and a spare randomized one
# that the re-encryption case rotates to and back.
CEKS = {"RANDOMIZED": "cek_rnd", "DETERMINISTIC": "cek_det"}
SPARE_CEK = "cek_rnd_spare"
ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA_256"
REENCRYPT_TABLE = "reencrypt_target"


def encrypted_with(kind: str, cek: str | None = None) -> str:
    """The ENCRYPTED WITH clause of a bench column of this encryption type.

    >>> encrypted_with("DETERMINISTIC")
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_det, ENCRYPTION_TYPE = DETERMINISTIC, \
ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
    """
    return (
        f"ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {cek or CEKS[kind]}, "
        f"ENCRYPTION_TYPE = {kind}, ALGORITHM = '{ALGORITHM}')"
    )


def create_table_sql(
    table: str, columns: list[tuple[str, str]], encrypted: dict[str, tuple[str, str]]
) -> str:
    """CREATE TABLE for `columns` (name, DuckDB type), with `encrypted` columns (name -> declared
    type, kind) declared as Always Encrypted columns.

    >>> create_table_sql("t", [("id", "BIGINT"), ("v", "DATE")], {"v": ("DATE", "RANDOMIZED")})
    "CREATE TABLE t (id BIGINT, v DATE ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_rnd, \
ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
    """
    parts = []
    for name, duck_type in columns:
        if name in encrypted:
            declared, kind = encrypted[name]
            parts.append(f"{name} {declared} {encrypted_with(kind)}")
        else:
            parts.append(f"{name} {duck_type}")
    return f"CREATE TABLE {table} ({', '.join(parts)})"


def refusal(error: BaseException) -> str:
    """How a refused case reads in the table: the error class and its message (engine messages
    carry no values, by design), on one line.

    >>> refusal(engine.NotSupportedError("no arithmetic\\ninside SUM"))
    'NotSupportedError: no arithmetic inside SUM'
    """
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str]]:
    relation = con.sql(f"SELECT * FROM {source}")
    return [(name, str(kind)) for name, kind in zip(relation.columns, relation.types, strict=True)]


def _key_ddl(con: engine.Connection, ceks: tuple[str, ...]) -> None:
    con.execute(
        f"CREATE COLUMN MASTER KEY {CMK} WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)"
    )
    for cek in ceks:
        con.execute(
            f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = {CMK}, "
            "ALGORITHM = 'RSA_OAEP')"
        )


def _connect(database: str, keys: Path) -> engine.Connection:
    with warnings.catch_warnings():
        # Protocol "none" is unattested on purpose: the bench measures cost, not trust.
        warnings.simplefilter("ignore", UserWarning)
        con = engine.connect(database, key_dir=str(keys), attestation_protocol="none")
    con.execute(f"SET threads={THREADS}")
    return con


def _make_cmk(keys: Path) -> None:
    from engine.client.keystores import build_registry

    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    build_registry(key_directory=keys).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)


def _build(
    folder: Path, source: duckdb.DuckDBPyConnection, prefixes: list[int], log: Callable[[str], None]
) -> None:
    scratch = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    _make_cmk(scratch / "keys")
    con = _connect(str(scratch / "tpch.duckdb"), scratch / "keys")
    try:
        _key_ddl(con, (*CEKS.values(), SPARE_CEK))
        for table in tpch.TABLES:
            con.execute(create_table_sql(table, _columns(source, table), tpch.ENCRYPTED[table]))
            data = tpch.arrow_table(
                source.sql(f"SELECT * FROM {table} ORDER BY {tpch.ROW_ID[table]}")
            )
            started = time.perf_counter()
            con.bulk_insert(table, data, progress=False)
            log(
                f"enclavesql: {table} loaded with bulk_insert, {data.num_rows} rows in "
                f"{time.perf_counter() - started:.1f} s"
            )
            if table == "lineitem":
                # The cost-growth runs read the first N rows, as tpch.first_rows does.
                for size in prefixes:
                    con.execute(
                        create_table_sql(
                            f"lineitem_{size}", _columns(source, table), tpch.ENCRYPTED[table]
                        )
                    )
                    con.bulk_insert(f"lineitem_{size}", data.slice(0, size), progress=False)
        phone = {"phone": tpch.ENCRYPTED["customer"]["c_phone"]}
        con.execute(create_table_sql("watchlist", [("phone", "VARCHAR")], phone))
        con.bulk_insert(
            "watchlist", tpch.arrow_table(source.sql("SELECT phone FROM watchlist")), progress=False
        )
    finally:
        con.close()
    (scratch / "layout.json").write_text(
        json.dumps({"version": LAYOUT_VERSION, "prefixes": prefixes}), encoding="utf-8"
    )
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)


def _layout_ok(folder: Path, prefixes: list[int]) -> bool:
    try:
        layout = json.loads((folder / "layout.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(layout.get("version") == LAYOUT_VERSION and layout.get("prefixes") == prefixes)


class EnclaveSQLVariant:
    """The product as a bench variant: one EnclaveSQL connection on the cached database.

    `query_row` and `bulk_load_row` return one row each, timed like every other variant
    (baselines.measure) and checked against plaintext DuckDB's answer.
    """

    def __init__(
        self,
        sf_folder: Path,
        source: duckdb.DuckDBPyConnection,
        *,
        prefixes: list[int],
        log: Callable[[str], None] = print,
    ) -> None:
        self.folder = sf_folder / FOLDER
        # The enclave's platform files live beside the bench data, not in the user's home.
        os.environ.setdefault("ENCLAVESQL_PLATFORM_DIR", str(sf_folder / "enclave-platform"))
        self.keys = self.folder / "keys"
        self.prefixes = prefixes
        if not _layout_ok(self.folder, prefixes):
            self._build(source, log)
        try:
            self.con = self._open(source)
        except (engine.Error, duckdb.Error) as error:
            # A cache written by an older engine (its catalog or storage changed) is rebuilt.
            log(f"enclavesql: the cached database does not open ({refusal(error)}); rebuilding")
            self._build(source, log)
            self.con = self._open(source)

    def _build(self, source: duckdb.DuckDBPyConnection, log: Callable[[str], None]) -> None:
        log(f"enclavesql: building {self.folder} with Connection.bulk_insert ...")
        started = time.perf_counter()
        _build(self.folder, source, self.prefixes, log)
        log(f"enclavesql: database ready in {time.perf_counter() - started:.1f} s")

    def _open(self, source: duckdb.DuckDBPyConnection) -> engine.Connection:
        con = _connect(str(self.folder / "tpch.duckdb"), self.keys)
        # The same row count as the plaintext table, and a row that decrypts under both CEKs
        # to its plaintext: a cache whose keys or cell format an engine change made unreadable
        # raises here (CellAuthenticationError) and is rebuilt, instead of failing every case.
        probe = "SELECT c_name, c_phone FROM customer ORDER BY c_rowid LIMIT 1"
        try:
            count = con.execute("SELECT count(*) FROM lineitem").fetchall()[0][0]
            expected = source.execute("SELECT count(*) FROM lineitem").fetchall()[0][0]
            same = con.execute(probe).fetchall() == source.execute(probe).fetchall()
        except BaseException:
            con.close()
            raise
        if count != expected or not same:
            con.close()
            raise engine.DataError(
                "the cached product database does not match the bench data; rebuild it"
            )
        return con

    def close(self) -> None:
        """Closes the product connection."""
        self.con.close()

    def _table(self, table: str, size: int, total: int) -> str:
        if size >= total or table != "lineitem":
            return table
        if size not in self.prefixes:
            raise ValueError(f"no cached lineitem prefix of {size} rows; rebuild the cache")
        return f"lineitem_{size}"

    def query_row(
        self,
        case: QueryCase,
        size: int,
        total: int,
        expected: Any,
        names: dict[str, str],
        repeat: int,
    ) -> Row:
        """The case's plaintext SQL run through the product, or a 'not supported yet' row."""
        table = self._table(case.table, size, total)
        sql = case.sql.format(**{**names, case.table: table})
        cursor = self.con.cursor()
        try:
            bound = case.bind(names)
            answer, times = measure(
                lambda: cursor.execute(sql, bound).fetchall(), repeat, case.inner
            )
        except engine.Error as error:
            return unsupported_row(case.name, "enclavesql", size, refusal(error))
        check(case.name, "enclavesql", expected, answer)
        note = f"engine.connect, attestation none, SET threads={THREADS}"
        return make_row(case.name, "enclavesql", times, size, note)

    def bulk_load_row(self, parquet: Path, repeat: int) -> Row:
        """Parquet -> an in-memory EnclaveSQL table with the 4 randomized lineitem columns
        encrypted by Connection.bulk_insert, the same rows and shape as the other variants."""
        source = f"read_parquet('{parquet / 'lineitem.parquet'}')"
        reader = duckdb.connect()
        reader.execute(f"SET threads={THREADS}")
        columns = _columns(reader, source)
        total = int(reader.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])
        encrypted = {column: tpch.ENCRYPTED["lineitem"][column] for column in BULK_COLUMNS}
        target = _connect(":memory:", self.keys)
        try:
            _key_ddl(target, (CEKS["RANDOMIZED"],))

            def load() -> pa.Table:
                target.execute("DROP TABLE IF EXISTS loaded")
                target.execute(create_table_sql("loaded", columns, encrypted))
                data = tpch.arrow_table(reader.sql(f"SELECT * FROM {source}"))
                target.bulk_insert("loaded", data, progress=False)
                return data

            try:
                data, times = measure(load, repeat)
            except engine.Error as error:
                return unsupported_row("bulk_load", "enclavesql", total, refusal(error))
            back = target.cursor().execute(f"SELECT {', '.join(BULK_COLUMNS)} FROM loaded")
            loaded = back.fetch_arrow_table()
            for column in BULK_COLUMNS:
                check_column(
                    "bulk_load", "enclavesql", data[column], loaded[column].combine_chunks()
                )
        finally:
            target.close()
            reader.close()
        note = "Connection.bulk_insert, 4 rnd. columns, in-memory database"
        return make_row("bulk_load", "enclavesql", times, total, note)

    def reencrypt_row(self, plain: duckdb.DuckDBPyConnection, repeat: int) -> Row:
        """ALTER TABLE … ALTER COLUMN l_extendedprice to another enclave-enabled CEK and back,
        on a ciphertext copy of lineitem's column, through engine.rotation with an enclave."""
        from engine.rotation import alter_column_encryption, open_enclave

        con = self.con
        column = "l_extendedprice"
        declared, kind = tpch.ENCRYPTED["lineitem"][column]
        con.execute(f"DROP TABLE IF EXISTS {REENCRYPT_TABLE}")
        con.execute(
            f"CREATE TABLE {REENCRYPT_TABLE} (l_rowid BIGINT, {column} {declared} "
            f"{encrypted_with(kind)})"
        )
        con.execute(f"INSERT INTO {REENCRYPT_TABLE} SELECT l_rowid, {column} FROM lineitem")
        total = int(con.execute(f"SELECT count(*) FROM {REENCRYPT_TABLE}").fetchall()[0][0])
        platform = os.environ["ENCLAVESQL_PLATFORM_DIR"]
        paths: set[str] = set()
        keys = [SPARE_CEK, CEKS[kind]]
        turn = [0]

        def rotate() -> None:
            cek = keys[turn[0] % 2]
            turn[0] += 1
            sql = (
                f"ALTER TABLE {REENCRYPT_TABLE} ALTER COLUMN {column} {declared} "
                f"{encrypted_with(kind, cek)}"
            )
            result = alter_column_encryption(con, sql, enclave=context, progress=False)
            paths.add(result.path)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                context = open_enclave("none", platform)
        except engine.Error as error:
            return unsupported_row("reencrypt", "enclavesql", total, refusal(error))
        try:
            _, times = measure(rotate, repeat)
        except engine.Error as error:
            return unsupported_row("reencrypt", "enclavesql", total, refusal(error))
        finally:
            context.session.close()
        mine = con.cursor().execute(f"SELECT {column} FROM {REENCRYPT_TABLE} ORDER BY l_rowid")
        theirs = tpch.arrow_table(plain.sql(f"SELECT {column} FROM lineitem ORDER BY l_rowid"))
        check_column(
            "reencrypt",
            "enclavesql",
            theirs[column],
            mine.fetch_arrow_table()[column].combine_chunks(),
        )
        con.execute(f"DROP TABLE {REENCRYPT_TABLE}")
        note = f"ALTER COLUMN to another CEK, {'/'.join(sorted(paths))} path, in place"
        return make_row("reencrypt", "enclavesql", times, total, note)

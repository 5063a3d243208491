"""The differential harness: run a sqllogictest-like ``.test`` file on EnclaveSQL and on plaintext
DuckDB (the oracle) and compare every answer.

File format (records separated by blank lines; ``#`` starts a comment line):

    statement ok                      run on both (the oracle drops ENCRYPTED WITH clauses and
    <sql>                             skips key DDL)
    statement error <Class> <text>    EnclaveSQL only: must raise engine.errors.<Class> whose
    <sql>                             message contains <text>
    query [approx]                    run on both and compare rows (in order when the SQL has
    <sql>                             ORDER BY, else as multisets); with approx, floats agree
                                      within a relative 1e-9 (summation order may differ)
    generate <table> <rows> <seed> [executemany|bulk_insert]
                                      random rows for every column of <table>, inserted into both

A ``params: <python expression>`` line right after a statement or query header gives the
parameters (names available: date, time, datetime, timezone, Decimal, UUID). The harness creates
the keys cmk1 (PEM_FILE), cek1 and cek2 under it, and cmk_enclave / cek_enclave with
ENCLAVE_COMPUTATIONS, before the first record. Files named ``enclave_*.test`` run on a
connection with ``attestation_protocol='none'``.
"""

from __future__ import annotations

import datetime
import decimal
import math
import random
import re
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

import engine
from engine import errors

__all__ = ["Differential", "Record", "normalize_rows", "parse_test_file", "strip_encryption"]

KEY_SETUP = (
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'cmk1.pem')",
    "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP')",
    "CREATE COLUMN ENCRYPTION KEY cek2 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP')",
    "CREATE COLUMN MASTER KEY cmk_enclave WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'cmk_enclave.pem', ENCLAVE_COMPUTATIONS)",
    "CREATE COLUMN ENCRYPTION KEY cek_enclave WITH VALUES (COLUMN_MASTER_KEY = cmk_enclave, "
    "ALGORITHM = 'RSA_OAEP')",
)
_KEY_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\s+COLUMN\s+(MASTER|ENCRYPTION)\s+KEY", re.I)
_ENCRYPTED_WITH = re.compile(r"\bENCRYPTED\s+WITH\s*\(", re.I)
_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.I)
_PARAM_NAMES = {
    "date": datetime.date,
    "time": datetime.time,
    "datetime": datetime.datetime,
    "timezone": datetime.timezone,
    "timedelta": datetime.timedelta,
    "Decimal": decimal.Decimal,
    "UUID": uuid.UUID,
}


@dataclass
class Record:
    """One record of a .test file; ``line`` is where its header is, for failure messages."""

    kind: str
    line: int
    sql: str = ""
    params: Any = None
    error_class: str = ""
    error_text: str = ""
    table: str = ""
    rows: int = 0
    seed: int = 0
    via: str = "executemany"
    approx: bool = False


def parse_test_file(path: Path) -> list[Record]:
    """Parse a .test file into records; a malformed header raises ValueError with its line."""
    records: list[Record] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line or line.startswith("#"):
            index += 1
            continue
        start = index + 1
        header = line.split()
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip():
            if not lines[index].lstrip().startswith("#"):
                body.append(lines[index])
            index += 1
        params = None
        if body and body[0].strip().startswith("params:"):
            params = eval(  # noqa: S307 - test data written by us, with no builtins
                body.pop(0).split(":", 1)[1], {"__builtins__": {}}, dict(_PARAM_NAMES)
            )
        sql = "\n".join(body).strip()
        if header[:2] == ["statement", "ok"]:
            records.append(Record("statement", start, sql, params))
        elif header[:2] == ["statement", "error"] and len(header) >= 3:
            records.append(Record("error", start, sql, params, header[2], " ".join(header[3:])))
        elif header[0] == "query":
            records.append(Record("query", start, sql, params, approx="approx" in header[1:]))
        elif header[0] == "generate" and len(header) in (4, 5):
            via = header[4] if len(header) == 5 else "executemany"
            records.append(
                Record(
                    "generate",
                    start,
                    table=header[1],
                    rows=int(header[2]),
                    seed=int(header[3]),
                    via=via,
                )
            )
        else:
            raise ValueError(f"{path.name}:{start}: unknown record header {line!r}")
    return records


def strip_encryption(sql: str) -> str:
    """The plaintext DDL for the oracle: every ENCRYPTED WITH (...) clause removed.

    >>> strip_encryption("CREATE TABLE t (a INT ENCRYPTED WITH (X = (1), Y = 2) NOT NULL)")
    'CREATE TABLE t (a INT NOT NULL)'
    """
    while True:
        match = _ENCRYPTED_WITH.search(sql)
        if match is None:
            return sql
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        sql = sql[: match.start()].rstrip() + sql[end:]


def _normalize(value: Any) -> Any:
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC)
    return value


def _approximately_equal(ours: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> bool:
    """Equal rows, except that floats need only agree within a relative 1e-9."""
    if len(ours) != len(theirs):
        return False
    for mine, oracle in zip(ours, theirs, strict=True):
        if len(mine) != len(oracle):
            return False
        for a, b in zip(mine, oracle, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif a != b:
                return False
    return True


def normalize_rows(rows: list[tuple[Any, ...]], ordered: bool) -> list[tuple[Any, ...]]:
    """Rows comparable across engines: aware datetimes in UTC, sorted unless ``ordered``."""
    normalized = [tuple(_normalize(v) for v in row) for row in rows]
    return normalized if ordered else sorted(normalized, key=repr)


# Random values per DuckDB type. Small pools make duplicates, so GROUP BY and joins match rows.


def _random_value(type_name: str, rng: random.Random) -> Any:
    name = type_name.upper()
    if name.endswith("[]"):
        return [_random_value(name[:-2], rng) for _ in range(rng.randint(0, 3))]
    if name == "BOOLEAN":
        return rng.random() < 0.5
    bits = {"TINYINT": 8, "SMALLINT": 16, "INTEGER": 32, "BIGINT": 64, "HUGEINT": 128}.get(name)
    if bits:
        return rng.randint(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if name == "FLOAT":
        # A float32 value; never -0.0 or NaN, whose equality differs between bytes and SQL.
        value: float = struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]
        return value or 1.0
    if name == "DOUBLE":
        return rng.uniform(-1e9, 1e9) or 1.0
    if name.startswith("DECIMAL"):
        precision, scale = (int(x) for x in name[8:-1].split(","))
        limit = 10**precision - 1
        return decimal.Decimal(rng.randint(-limit, limit)).scaleb(-scale)
    if name == "DATE":
        return datetime.date(1, 1, 1) + datetime.timedelta(days=rng.randint(0, 3_652_058))
    if name == "TIME":
        return (
            datetime.datetime(2000, 1, 1)
            + datetime.timedelta(microseconds=rng.randrange(86_400_000_000))
        ).time()
    if name in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"):
        moment = datetime.datetime(1900, 1, 1) + datetime.timedelta(
            microseconds=rng.randrange(200 * 365 * 86_400_000_000)
        )
        return moment.replace(tzinfo=datetime.UTC) if "ZONE" in name else moment
    if name == "VARCHAR":
        alphabet = "abcXYZ 09-_éßÆ漢字😀"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if name == "BLOB":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 16)))
    if name == "UUID":
        return uuid.UUID(int=rng.getrandbits(128))
    raise ValueError(f"the generator has no values for type {type_name}")


class Differential:
    """One EnclaveSQL connection and one plaintext DuckDB connection, fed the same records."""

    def __init__(self, workdir: Path, key_files: dict[str, Path], **options: Any) -> None:
        """``options`` go to engine.connect (``attestation_protocol`` for enclave files)."""
        key_dir = workdir / "keys"
        key_dir.mkdir()
        for name, source in key_files.items():
            shutil.copy(source, key_dir / name)
        self.connection = engine.connect(
            str(workdir / "enclave.duckdb"), key_dir=str(key_dir), **options
        )
        self.oracle = duckdb.connect(str(workdir / "oracle.duckdb"))
        for statement in KEY_SETUP:
            self.connection.execute(statement)

    def close(self) -> None:
        self.connection.close()
        self.oracle.close()

    def run(self, record: Record, where: str) -> None:
        if record.kind == "statement":
            self._statement(record)
        elif record.kind == "error":
            self._error(record, where)
        elif record.kind == "query":
            self._query(record, where)
        elif record.kind == "generate":
            self._generate(record)

    def _params(self, record: Record) -> list[Any]:
        return list(record.params) if record.params is not None else []

    def _statement(self, record: Record) -> None:
        self.connection.execute(record.sql, self._params(record))
        if not _KEY_DDL.match(record.sql):
            self.oracle.execute(strip_encryption(record.sql), self._params(record))

    def _error(self, record: Record, where: str) -> None:
        expected = getattr(errors, record.error_class)
        try:
            self.connection.execute(record.sql, self._params(record))
        except expected as error:
            assert record.error_text in str(error), (
                f"{where}: message {str(error)!r} lacks {record.error_text!r}"
            )
            return
        except errors.Error as error:
            raise AssertionError(
                f"{where}: expected {record.error_class}, got {type(error).__name__}: {error}"
            ) from error
        raise AssertionError(f"{where}: expected {record.error_class}, nothing was raised")

    def _query(self, record: Record, where: str) -> None:
        ours = self.connection.execute(record.sql, self._params(record)).fetchall()
        theirs = self.oracle.execute(record.sql, self._params(record)).fetchall()
        ordered = bool(_ORDER_BY.search(record.sql))
        mine, oracle = normalize_rows(ours, ordered), normalize_rows(theirs, ordered)
        same = _approximately_equal(mine, oracle) if record.approx else mine == oracle
        assert same, f"{where}: EnclaveSQL and DuckDB disagree on\n{record.sql}"

    def _generate(self, record: Record) -> None:
        rng = random.Random(record.seed)
        columns = self.oracle.execute(f"DESCRIBE {record.table}").fetchall()
        pools = {
            name: [_random_value(type_name, rng) for _ in range(max(3, record.rows // 4))]
            for name, type_name, *_ in columns
        }
        rows = []
        for number in range(record.rows):
            row = []
            for name, _type_name, null, *_ in columns:
                if name == "id":
                    row.append(number + 1)
                elif null == "YES" and rng.random() < 0.1:
                    row.append(None)
                else:
                    row.append(rng.choice(pools[name]))
            rows.append(tuple(row))
        marks = ", ".join("?" for _ in columns)
        insert = f"INSERT INTO {record.table} VALUES ({marks})"
        self.oracle.executemany(insert, rows)
        if record.via == "bulk_insert":
            self.connection.bulk_insert(record.table, rows)
        else:
            self.connection.cursor().executemany(insert, rows)

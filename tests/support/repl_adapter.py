"""A plain-DuckDB stand-in for `engine.connect`, so the shell and the notebook magic can be tested
without the encrypted engine: PEP 249 calls pass through to DuckDB, syntax errors come from the
EnclaveSQL parser (with line and column) and DuckDB errors map onto engine.errors.

It encrypts nothing; the `sys` catalog tables exist so tests can register an "encrypted" column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
from sqlglot import exp

from engine.host.catalog_store import CatalogStore
from engine.host.duckdb_errors import map_duckdb_error
from engine.sql.dialect import parse_statements

__all__ = ["connect", "AdapterConnection"]

_RESULT_STATEMENTS = (exp.Query, exp.Describe, exp.Show, exp.Pragma, exp.Command)


class AdapterCursor:
    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self.arraysize = 1
        self._hide_count = False
        self._rowcount = -1

    @property
    def description(self) -> Any:
        return None if self._hide_count else self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> AdapterCursor:
        statements = parse_statements(sql)
        try:
            self._cursor.execute(sql, list(parameters or ()))
        except duckdb.Error as error:
            raise map_duckdb_error(error, redact=False) from None
        self._rowcount = -1
        self._hide_count = bool(statements) and not isinstance(statements[-1], _RESULT_STATEMENTS)
        if self._hide_count:
            # DuckDB answers DDL and DML with a one-row "Count" result; the engine, like most
            # DB-API drivers, reports it as rowcount and has no result set.
            row = self._cursor.fetchone() if self._cursor.description else None
            if isinstance(statements[-1], exp.Insert | exp.Update | exp.Delete) and row:
                self._rowcount = int(row[0])
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> AdapterCursor:
        try:
            self._cursor.executemany(sql, [list(row) for row in rows])
        except duckdb.Error as error:
            raise map_duckdb_error(error, redact=False) from None
        return self

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self.arraysize if size is None else size)

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def fetch_arrow_table(self) -> Any:
        # Built from rows: DuckDB warns about the extra copy its DB-API Arrow export makes.
        import pyarrow as pa

        names = [column[0] for column in self._cursor.description]
        rows = self._cursor.fetchall()
        return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})

    def close(self) -> None:
        self._cursor.close()


class AdapterConnection:
    def __init__(self, database: str) -> None:
        self._connection = duckdb.connect(database)
        CatalogStore(self._connection).create_tables()

    def cursor(self) -> AdapterCursor:
        return AdapterCursor(self._connection.cursor())

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def close(self) -> None:
        self._connection.close()


def connect(database: str = ":memory:", **_options: Any) -> AdapterConnection:
    """Open ``database`` in plain DuckDB; encryption options are accepted and ignored."""
    return AdapterConnection(database)


def register_key_and_column(
    connection: AdapterConnection,
    *,
    table: str,
    column: str,
    declared_type: str,
    key_path: str = "cmk1.pem",
    provider: str = "PEM_FILE",
    encryption_type: str = "DETERMINISTIC",
) -> None:
    """Record CMK1, CEK1 and one encrypted column in the `sys` tables, as the engine's DDL would.

    Nothing is encrypted: the column keeps its plaintext values, which is all the shell needs.
    """
    raw = connection._connection
    raw.execute(
        "INSERT INTO sys.column_master_keys VALUES (1, 'CMK1', ?, ?, true, NULL, now())",
        [provider, key_path],
    )
    raw.execute("INSERT INTO sys.column_encryption_keys VALUES (1, 'CEK1', now())")
    raw.execute(
        "INSERT INTO sys.column_encryption_key_values (column_encryption_key_id, "
        "column_master_key_id, encrypted_value, encryption_algorithm_name) "
        "VALUES (1, 1, '\\x00'::BLOB, 'RSA_OAEP')"
    )
    code = 1 if encryption_type == "DETERMINISTIC" else 2
    raw.execute(
        "INSERT INTO sys.encrypted_columns VALUES (?, ?, ?, 1, ?, ?, "
        "'AEAD_AES_256_CBC_HMAC_SHA_256')",
        [table, column, declared_type, code, encryption_type],
    )

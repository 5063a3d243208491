"""The catalog tables in schema ``sys`` of the DuckDB file: create them, read a snapshot, and
apply catalog changes (key DDL and encrypted-column metadata) inside the caller's transaction,
keeping each hidden tag column in step with its column's metadata (engine.sql.tag_columns).

It stores only metadata and wrapped CEK envelopes, never a plaintext CEK. It re-checks the rules
the SQL layer already enforced (a key in use cannot be dropped) and never commits by itself.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from engine.errors import ProgrammingError
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.plan import (
    AddCekValue,
    CatalogChange,
    CreateCek,
    CreateCmk,
    DropCek,
    DropCekValue,
    DropCmk,
    DropEncryptedColumns,
    ImportCatalog,
    RegisterEncryptedColumn,
)
from engine.sql.tag_columns import tag_sql

__all__ = ["CATALOG_SCHEMA", "CatalogStore"]

CATALOG_SCHEMA = "sys"

# No PRIMARY KEY or UNIQUE constraints: DuckDB checks them eagerly inside a transaction that
# deletes and re-inserts, and the store checks names itself (case-insensitively, as T-SQL does).
_TABLES = (
    """CREATE TABLE IF NOT EXISTS sys.column_master_keys (
        column_master_key_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        key_store_provider_name VARCHAR NOT NULL,
        key_path VARCHAR NOT NULL,
        allow_enclave_computations BOOLEAN NOT NULL,
        signature BLOB,
        create_date TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sys.column_encryption_keys (
        column_encryption_key_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        create_date TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sys.column_encryption_key_values (
        column_encryption_key_id INTEGER NOT NULL,
        column_master_key_id INTEGER NOT NULL,
        encrypted_value BLOB NOT NULL,
        encryption_algorithm_name VARCHAR NOT NULL,
        key_check BLOB)""",
    # Catalogs made before the key check existed get the column too (NULL there: refused).
    "ALTER TABLE sys.column_encryption_key_values ADD COLUMN IF NOT EXISTS key_check BLOB",
    """CREATE TABLE IF NOT EXISTS sys.encrypted_columns (
        table_name VARCHAR NOT NULL,
        column_name VARCHAR NOT NULL,
        declared_type VARCHAR NOT NULL,
        column_encryption_key_id INTEGER NOT NULL,
        encryption_type INTEGER NOT NULL,
        encryption_type_desc VARCHAR NOT NULL,
        encryption_algorithm_name VARCHAR NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS sys.catalog_version (version BIGINT NOT NULL)",
    # The hidden tag column of a DETERMINISTIC column (engine.sql.tag_columns), beside
    # encrypted_columns so that table keeps SQL Server's shape. Columns made before tags
    # existed have no row: their lookups scan the cells.
    """CREATE TABLE IF NOT EXISTS sys.tag_columns (
        table_name VARCHAR NOT NULL,
        column_name VARCHAR NOT NULL,
        tag_column VARCHAR NOT NULL)""",
)

# The codes of SQL Server's sys.columns.encryption_type.
_TYPE_CODES = {"DETERMINISTIC": 1, "RANDOMIZED": 2}
_TYPE_NAMES = {code: name for name, code in _TYPE_CODES.items()}


class CatalogStore:
    """Reads and writes the ``sys`` catalog tables through one DuckDB connection.

    >>> store = CatalogStore(duckdb.connect())
    >>> store.create_tables()
    >>> store.read_version()
    0
    >>> store.snapshot(0).cmks
    ()
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._con = connection
        # The catalog lives in the database the connection opened; naming it keeps the catalog
        # reachable after USE switches the default database to an attached one.
        self.database = str(connection.execute("SELECT current_database()").fetchall()[0][0])
        self._prefix = '"' + self.database.replace('"', '""') + '".sys.'
        self._indexed: set[tuple[str, str]] | None = None

    def _qualified(self, sql: str) -> str:
        return sql.replace("sys.", self._prefix)

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._con.execute(self._qualified(sql), params or []).fetchall()

    def _run(self, sql: str, params: list[Any] | None = None) -> None:
        self._con.execute(self._qualified(sql), params or [])

    def create_tables(self) -> None:
        """Create schema ``sys`` and its tables when missing (one transaction)."""
        self._con.execute("BEGIN TRANSACTION")
        try:
            self._run(f"CREATE SCHEMA IF NOT EXISTS {self._prefix[:-1]}")
            for statement in _TABLES:
                self._run(statement)
            if not self._rows("SELECT version FROM sys.catalog_version"):
                self._run("INSERT INTO sys.catalog_version VALUES (0)")
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def exists(self) -> bool:
        """Whether the catalog tables are in the database (a read-only open cannot make them)."""
        rows = self._con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'sys' AND table_name = 'catalog_version'",
            [self.database],
        ).fetchall()
        return bool(rows[0][0])

    def read_version(self) -> int:
        """The version stored in the file (what this transaction sees)."""
        rows = self._rows("SELECT max(version) FROM sys.catalog_version")
        return int(rows[0][0] or 0)

    def write_version(self, version: int) -> None:
        self._run("UPDATE sys.catalog_version SET version = ?", [version])

    def snapshot(self, version: int) -> CatalogSnapshot:
        """The catalog as this transaction sees it, labelled ``version``."""
        cmk_rows = self._rows(
            "SELECT column_master_key_id, name, key_store_provider_name, key_path, "
            "allow_enclave_computations, signature FROM sys.column_master_keys "
            "ORDER BY column_master_key_id"
        )
        cmk_names = {row[0]: row[1] for row in cmk_rows}
        cmks = tuple(
            ColumnMasterKey(name, provider, path, bool(enclave), bytes(sig) if sig else None)
            for _id, name, provider, path, enclave, sig in cmk_rows
        )
        value_rows = self._rows(
            "SELECT column_encryption_key_id, column_master_key_id, encrypted_value, "
            "encryption_algorithm_name, key_check FROM sys.column_encryption_key_values "
            "ORDER BY column_encryption_key_id, column_master_key_id"
        )
        values: dict[int, list[ColumnEncryptionKeyValue]] = {}
        for cek_id, cmk_id, envelope, algorithm, check in value_rows:
            values.setdefault(cek_id, []).append(
                ColumnEncryptionKeyValue(
                    cmk_names[cmk_id],
                    algorithm,
                    bytes(envelope),
                    bytes(check) if check is not None else None,
                )
            )
        cek_rows = self._rows(
            "SELECT column_encryption_key_id, name FROM sys.column_encryption_keys "
            "ORDER BY column_encryption_key_id"
        )
        cek_names = {row[0]: row[1] for row in cek_rows}
        ceks = tuple(ColumnEncryptionKey(name, tuple(values.get(i, ()))) for i, name in cek_rows)
        encrypted: dict[tuple[str, str], tuple[str, Encryption, str | None]] = {}
        hidden: set[tuple[str, str]] = set()
        tags = {(t.casefold(), c.casefold()): tag for t, c, tag in self._tag_rows()}
        self._indexed = None  # read again for this snapshot, when a tagged column asks
        for table, column, declared, cek_id, code, algorithm in self._rows(
            "SELECT table_name, column_name, declared_type, column_encryption_key_id, "
            "encryption_type, encryption_algorithm_name FROM sys.encrypted_columns"
        ):
            encryption = Encryption(cek_names[cek_id], _TYPE_NAMES[code], algorithm)  # type: ignore[arg-type]
            tag = tags.get((table.casefold(), column.casefold()))
            encrypted[(table.casefold(), column.casefold())] = (declared, encryption, tag)
            if tag is not None:
                hidden.add((table.casefold(), tag.casefold()))
        tables: dict[str, list[ColumnInfo]] = {}
        names: dict[str, str] = {}
        for table, column, data_type in self._rows(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND database_name IN (?, 'temp') "
            "ORDER BY database_name, table_name, column_index",
            [self.database],
        ):
            names.setdefault(table.casefold(), table)
            if (table.casefold(), column.casefold()) in hidden:
                continue  # a tag column: no statement of the user's sees it
            entry = encrypted.get((table.casefold(), column.casefold()))
            indexed = (
                entry is not None
                and entry[2] is not None
                and ((table.casefold(), column.casefold()) in self._indexed_columns())
            )
            info = (
                ColumnInfo(column, entry[0], entry[1], entry[2], indexed)
                if entry
                else ColumnInfo(column, data_type)
            )
            tables.setdefault(table.casefold(), []).append(info)
        return CatalogSnapshot(
            version,
            cmks,
            ceks,
            tuple(TableInfo(names[key], tuple(columns)) for key, columns in tables.items()),
        )

    def _indexed_columns(self) -> set[tuple[str, str]]:
        """(table, column), case-folded, of the columns a single-column PRIMARY KEY, UNIQUE or
        index covers: DuckDB serves equality on those from the index."""
        if self._indexed is None:
            found: set[tuple[str, str]] = set()
            for table, names in self._rows(
                "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                "WHERE database_name = ? AND schema_name = 'main' "
                "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
                [self.database],
            ):
                if len(names) == 1:
                    found.add((table.casefold(), names[0].casefold()))
            for table, expressions in self._rows(
                "SELECT table_name, expressions FROM duckdb_indexes() "
                "WHERE database_name = ? AND schema_name = 'main'",
                [self.database],
            ):
                inner = str(expressions).strip("[]").split(",")
                if len(inner) == 1:
                    found.add((table.casefold(), inner[0].strip().strip("'\"").casefold()))
            self._indexed = found
        return self._indexed

    def _tag_rows(
        self, table: str | None = None, column: str | None = None
    ) -> list[tuple[Any, ...]]:
        """(table, column, tag column) rows, of one table or column when given; none in a
        catalog that an IMPORT DATABASE of an older export brought in (no sys.tag_columns
        until the file is opened again)."""
        present = self._rows(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'sys' AND table_name = 'tag_columns'",
            [self.database],
        )
        if not present[0][0]:
            return []
        sql = "SELECT table_name, column_name, tag_column FROM sys.tag_columns WHERE true"
        params: list[Any] = []
        if table is not None:
            sql += " AND lower(table_name) = lower(?)"
            params.append(table)
        if column is not None:
            sql += " AND lower(column_name) = lower(?)"
            params.append(column)
        return self._rows(sql, params)

    def _forget_tags(self, table: str, column: str | None = None) -> None:
        if not self._tag_rows(table, column):
            return
        sql = "DELETE FROM sys.tag_columns WHERE lower(table_name) = lower(?)"
        params = [table]
        if column is not None:
            sql += " AND lower(column_name) = lower(?)"
            params.append(column)
        self._run(sql, params)

    # Applying changes. Each check repeats the SQL layer's, because the host must not rely on
    # a caller having described the statement against the current catalog.

    def apply(self, changes: Iterable[CatalogChange]) -> None:
        """Apply ``changes`` in order inside the caller's transaction."""
        for change in changes:
            if isinstance(change, CreateCmk):
                self._create_cmk(change)
            elif isinstance(change, DropCmk):
                self._drop_cmk(change)
            elif isinstance(change, CreateCek):
                self._create_cek(change)
            elif isinstance(change, AddCekValue):
                self._add_value(self._cek_id(change.cek_name), change.cek_name, change.value)
            elif isinstance(change, DropCekValue):
                self._drop_value(change)
            elif isinstance(change, DropCek):
                self._drop_cek(change)
            elif isinstance(change, RegisterEncryptedColumn):
                self._register_column(change)
            elif isinstance(change, DropEncryptedColumns):
                self._drop_columns(change)
            elif isinstance(change, ImportCatalog):
                self._make_room_for_import(change)
            else:
                raise ProgrammingError(f"unknown catalog change {type(change).__name__}")

    def _make_room_for_import(self, change: ImportCatalog) -> None:
        # DuckDB's IMPORT creates schema sys itself; ours must go first, and may only go when
        # it holds nothing the import would silently throw away.
        if not _export_has_catalog(change.directory):
            return
        in_use = sum(
            int(self._rows(f"SELECT count(*) FROM sys.{table}")[0][0])
            for table in ("column_master_keys", "column_encryption_keys", "encrypted_columns")
        )
        if in_use:
            raise ProgrammingError(
                "IMPORT DATABASE: the export carries its own catalog (schema sys), but this "
                "database already has column master keys, column encryption keys or encrypted "
                "columns; import into a new database file instead"
            )
        self._run(f"DROP SCHEMA {self._prefix[:-1]} CASCADE")

    def _id(self, table: str, id_column: str, name: str) -> int | None:
        rows = self._rows(
            f"SELECT {id_column} FROM sys.{table} WHERE lower(name) = lower(?)", [name]
        )
        return int(rows[0][0]) if rows else None

    def _next_id(self, table: str, id_column: str) -> int:
        return int(self._rows(f"SELECT coalesce(max({id_column}), 0) + 1 FROM sys.{table}")[0][0])

    def _cmk_id(self, name: str) -> int:
        found = self._id("column_master_keys", "column_master_key_id", name)
        if found is None:
            raise ProgrammingError(f"unknown column master key {name}")
        return found

    def _cek_id(self, name: str) -> int:
        found = self._id("column_encryption_keys", "column_encryption_key_id", name)
        if found is None:
            raise ProgrammingError(f"unknown column encryption key {name}")
        return found

    def _create_cmk(self, change: CreateCmk) -> None:
        if self._id("column_master_keys", "column_master_key_id", change.name) is not None:
            raise ProgrammingError(f"column master key {change.name} already exists")
        self._run(
            "INSERT INTO sys.column_master_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                self._next_id("column_master_keys", "column_master_key_id"),
                change.name,
                change.key_store_provider_name,
                change.key_path,
                change.allow_enclave_computations,
                change.signature,
                _now(),
            ],
        )

    def _drop_cmk(self, change: DropCmk) -> None:
        cmk_id = self._cmk_id(change.name)
        users = self._rows(
            "SELECT DISTINCT k.name FROM sys.column_encryption_key_values v JOIN "
            "sys.column_encryption_keys k USING (column_encryption_key_id) "
            "WHERE v.column_master_key_id = ? ORDER BY 1",
            [cmk_id],
        )
        if users:
            raise ProgrammingError(
                f"column master key {change.name} is still used by column encryption key(s) "
                f"{', '.join(row[0] for row in users)}; drop those keys or their values first"
            )
        self._run("DELETE FROM sys.column_master_keys WHERE column_master_key_id = ?", [cmk_id])

    def _create_cek(self, change: CreateCek) -> None:
        if self._id("column_encryption_keys", "column_encryption_key_id", change.name) is not None:
            raise ProgrammingError(f"column encryption key {change.name} already exists")
        if not change.values:
            raise ProgrammingError(f"column encryption key {change.name} needs a value")
        cek_id = self._next_id("column_encryption_keys", "column_encryption_key_id")
        self._run(
            "INSERT INTO sys.column_encryption_keys VALUES (?, ?, ?)", [cek_id, change.name, _now()]
        )
        for value in change.values:
            self._add_value(cek_id, change.name, value)

    def _add_value(self, cek_id: int, cek_name: str, value: ColumnEncryptionKeyValue) -> None:
        if value.encrypted_value is None:
            raise ProgrammingError(
                f"column encryption key {cek_name}: the value under {value.cmk_name} has no "
                "ENCRYPTED_VALUE; the client completes it before the host stores it"
            )
        cmk_id = self._cmk_id(value.cmk_name)
        existing = self._rows(
            "SELECT column_master_key_id FROM sys.column_encryption_key_values "
            "WHERE column_encryption_key_id = ?",
            [cek_id],
        )
        if any(row[0] == cmk_id for row in existing):
            raise ProgrammingError(
                f"column encryption key {cek_name} already has a value under column master key "
                f"{value.cmk_name}"
            )
        if len(existing) >= 2:
            raise ProgrammingError(
                f"column encryption key {cek_name} already has 2 values; drop one first"
            )
        self._run(
            "INSERT INTO sys.column_encryption_key_values VALUES (?, ?, ?, ?, ?)",
            [
                cek_id,
                cmk_id,
                bytes(value.encrypted_value),
                value.algorithm,
                None if value.key_check is None else bytes(value.key_check),
            ],
        )

    def _drop_value(self, change: DropCekValue) -> None:
        cek_id = self._cek_id(change.cek_name)
        cmk_id = self._cmk_id(change.cmk_name)
        count = self._rows(
            "SELECT count(*), count(*) FILTER (WHERE column_master_key_id = ?) "
            "FROM sys.column_encryption_key_values WHERE column_encryption_key_id = ?",
            [cmk_id, cek_id],
        )[0]
        if count[1] == 0:
            raise ProgrammingError(
                f"column encryption key {change.cek_name} has no value under column master key "
                f"{change.cmk_name}"
            )
        if count[0] <= 1:
            raise ProgrammingError(
                f"column encryption key {change.cek_name} has only this value; add another "
                "before dropping it, or drop the key"
            )
        self._run(
            "DELETE FROM sys.column_encryption_key_values WHERE column_encryption_key_id = ? "
            "AND column_master_key_id = ?",
            [cek_id, cmk_id],
        )

    def _drop_cek(self, change: DropCek) -> None:
        cek_id = self._cek_id(change.name)
        users = self._rows(
            "SELECT table_name || '.' || column_name FROM sys.encrypted_columns "
            "WHERE column_encryption_key_id = ? ORDER BY 1",
            [cek_id],
        )
        if users:
            raise ProgrammingError(
                f"column encryption key {change.name} is still used by column(s) "
                f"{', '.join(row[0] for row in users)}; drop or decrypt those columns first"
            )
        self._run(
            "DELETE FROM sys.column_encryption_key_values WHERE column_encryption_key_id = ?",
            [cek_id],
        )
        self._run(
            "DELETE FROM sys.column_encryption_keys WHERE column_encryption_key_id = ?", [cek_id]
        )

    def _register_column(self, change: RegisterEncryptedColumn) -> None:
        cek_id = self._cek_id(change.cek_name)
        previous = self._tag_rows(change.table, change.column)
        tag = change.tag_column
        if previous:
            # An in-place change of the column's encryption (its cells are already rewritten):
            # a DETERMINISTIC column keeps its tag column, recomputed from the new cells in
            # this transaction; any other kind has no use for one, so it goes.
            old = _quote(previous[0][2])
            self._forget_tags(change.table, change.column)
            if change.encryption_type == "DETERMINISTIC":
                tag = previous[0][2]
                self._con.execute(
                    f"UPDATE {_quote(change.table)} SET {old} = {tag_sql(_quote(change.column))}"
                )
            else:
                self._con.execute(f"ALTER TABLE {_quote(change.table)} DROP COLUMN {old}")
        self._run(
            "DELETE FROM sys.encrypted_columns WHERE lower(table_name) = lower(?) "
            "AND lower(column_name) = lower(?)",
            [change.table, change.column],
        )
        self._run(
            "INSERT INTO sys.encrypted_columns VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                change.table,
                change.column,
                change.declared_type,
                cek_id,
                _TYPE_CODES[change.encryption_type],
                change.encryption_type,
                change.algorithm,
            ],
        )
        if tag is not None:
            self._run(
                "INSERT INTO sys.tag_columns VALUES (?, ?, ?)", [change.table, change.column, tag]
            )

    def _drop_columns(self, change: DropEncryptedColumns) -> None:
        if not change.columns:
            self._run(
                "DELETE FROM sys.encrypted_columns WHERE lower(table_name) = lower(?)",
                [change.table],
            )
            self._forget_tags(change.table)  # the table and its tag columns go together
            return
        for column in change.columns:
            tags = [row[2] for row in self._tag_rows(change.table, column)]
            self._forget_tags(change.table, column)
            self._run(
                "DELETE FROM sys.encrypted_columns WHERE lower(table_name) = lower(?) "
                "AND lower(column_name) = lower(?)",
                [change.table, column],
            )
            for tag in tags:
                # DuckDB runs one ALTER per statement, so the column's hidden tag goes here,
                # in the same transaction as the DROP COLUMN that follows.
                self._con.execute(
                    f"ALTER TABLE {_quote(change.table)} DROP COLUMN IF EXISTS {_quote(tag)}"
                )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _export_has_catalog(directory: str) -> bool:
    """Whether the EXPORT DATABASE output in ``directory`` creates schema sys (a missing or
    unreadable directory is left to DuckDB's IMPORT to report)."""
    try:
        schema = (Path(directory) / "schema.sql").read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r'^\s*CREATE\s+SCHEMA\s+"?sys"?\s*;', schema, re.I | re.M) is not None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)

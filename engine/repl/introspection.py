"""What the shell and the notebook magic learn about a connection beyond PEP 249: the catalog
(tables, columns, keys) read with plain SELECTs, and which result columns are encrypted.

Engine extensions are looked up with getattr and every probe degrades to an empty answer; it
must never read key material (no envelope, no key file) or change the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlglot import exp

from engine.errors import Error
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.dialect import parse_statements

__all__ = ["read_catalog", "encrypted_flags", "referenced_tables", "select_rows"]


def select_rows(connection: Any, sql: str) -> list[tuple[Any, ...]] | None:
    """The rows of a catalog query, or None when this connection cannot answer it."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    except Exception:  # noqa: BLE001 - a missing catalog table or view only means "unknown"
        return None
    finally:
        cursor.close()


_COLUMNS_SQL = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
)
_ENCRYPTED_SQL = (
    "SELECT c.table_name, c.column_name, c.declared_type, k.name, c.encryption_type_desc, "
    "c.encryption_algorithm_name FROM sys.encrypted_columns AS c "
    "JOIN sys.column_encryption_keys AS k "
    "ON k.column_encryption_key_id = c.column_encryption_key_id"
)
# The hidden tag columns of deterministic columns (engine.sql.tag_columns): never listed.
_TAGS_SQL = "SELECT table_name, tag_column FROM sys.tag_columns"
_CMK_SQL = (
    "SELECT name, key_store_provider_name, key_path, allow_enclave_computations "
    "FROM sys.column_master_keys ORDER BY name"
)
# The envelope column is never selected: the shell has no use for wrapped keys.
_CEK_SQL = (
    "SELECT k.name, m.name, v.encryption_algorithm_name FROM sys.column_encryption_keys AS k "
    "LEFT JOIN sys.column_encryption_key_values AS v "
    "ON v.column_encryption_key_id = k.column_encryption_key_id "
    "LEFT JOIN sys.column_master_keys AS m ON m.column_master_key_id = v.column_master_key_id "
    "ORDER BY k.name, m.name"
)


def read_catalog(connection: Any) -> CatalogSnapshot:
    """Tables, columns and keys as the connection's catalog tables describe them.

    Each part that cannot be read (a plain DuckDB file has no ``sys`` schema) is left empty.
    Encrypted columns carry their declared plaintext type, not the stored BLOB.

    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE t (a INTEGER)")
    >>> [(table.name, [c.name for c in table.columns]) for table in read_catalog(con).tables]
    [('t', ['a'])]
    """
    encrypted: dict[tuple[str, str], tuple[str, Encryption]] = {}
    for table, column, declared, cek, kind, algorithm in (
        select_rows(connection, _ENCRYPTED_SQL) or ()
    ):
        encrypted[(table.casefold(), column.casefold())] = (
            declared,
            Encryption(cek, kind, algorithm),
        )
    hidden = {(t.casefold(), c.casefold()) for t, c in select_rows(connection, _TAGS_SQL) or ()}
    tables: dict[str, list[ColumnInfo]] = {}
    for table, column, data_type in select_rows(connection, _COLUMNS_SQL) or ():
        if (table.casefold(), column.casefold()) in hidden:
            continue
        entry = encrypted.get((table.casefold(), column.casefold()))
        info = ColumnInfo(column, entry[0], entry[1]) if entry else ColumnInfo(column, data_type)
        tables.setdefault(table, []).append(info)
    cmks = tuple(
        ColumnMasterKey(name, provider, path, bool(enclave))
        for name, provider, path, enclave in select_rows(connection, _CMK_SQL) or ()
    )
    values: dict[str, list[ColumnEncryptionKeyValue]] = {}
    for cek, cmk, algorithm in select_rows(connection, _CEK_SQL) or ():
        entries = values.setdefault(cek, [])
        if cmk is not None:
            entries.append(ColumnEncryptionKeyValue(cmk, algorithm, None))
    ceks = tuple(ColumnEncryptionKey(name, tuple(entries)) for name, entries in values.items())
    return CatalogSnapshot(
        0,
        cmks,
        ceks,
        tuple(TableInfo(name, tuple(columns)) for name, columns in tables.items()),
    )


def referenced_tables(sql: str) -> tuple[str, ...]:
    """Names of the tables a statement reads or writes; empty when it does not parse.

    >>> referenced_tables("SELECT a FROM t JOIN u ON t.id = u.id")
    ('t', 'u')
    """
    try:
        statements = parse_statements(sql)
    except Error:
        return ()
    names: list[str] = []
    for statement in statements:
        for table in statement.find_all(exp.Table):
            if table.name and table.name not in names:
                names.append(table.name)
    return tuple(names)


def encrypted_flags(
    cursor: Any, catalog: Callable[[], CatalogSnapshot] | None = None, sql: str | None = None
) -> tuple[bool, ...]:
    """For each result column of ``cursor``: does it come from an encrypted column?

    The engine's own answer (``cursor.encrypted_columns``, one bool per column) wins. Without
    it, the catalog is read (``catalog()``) and a result column counts as encrypted when it has
    the name of an encrypted column of a table that ``sql`` references, which is right for plain
    column references.

    >>> class Cursor:
    ...     description = [("a",), ("b",)]
    ...     encrypted_columns = (False, True)
    >>> encrypted_flags(Cursor())
    (False, True)
    """
    description: Sequence[Sequence[Any]] = cursor.description or ()
    reported = getattr(cursor, "encrypted_columns", None)
    if reported is not None and len(reported) == len(description):
        return tuple(bool(flag) for flag in reported)
    if catalog is None or sql is None:
        return tuple(False for _ in description)
    snapshot = catalog()
    wanted = {name.casefold() for name in referenced_tables(sql)}
    encrypted_names = {
        column.name.casefold()
        for table in snapshot.tables
        if table.name.casefold() in wanted
        for column in table.columns
        if column.encryption is not None
    }
    return tuple(str(column[0]).casefold() in encrypted_names for column in description)

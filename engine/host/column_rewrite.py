"""Rewrite every value of one column in place, inside the caller's DuckDB transaction.

It first adds a hidden shadow column, which also makes DuckDB refuse concurrent writes to the
table. Values are read and written back in rowid-ranged batches: into the column itself when
the stored type stays the same, else into the shadow, which ``ALTER COLUMN … SET DATA TYPE …
USING`` swaps in. Nothing is durable before the caller commits, so a crash leaves the old column.
It never sees a key: the values it hands out and takes back come from the ``transform`` (the
client's, or ``enclave_encryption_transform``, which normalizes here and encrypts in the enclave).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from engine.errors import InternalError, NotSupportedError, ProgrammingError
from engine.normalization import normalize

if TYPE_CHECKING:
    from engine.host.enclave_gateway import EnclaveGateway

__all__ = ["SHADOW_PREFIX", "enclave_encryption_transform", "key_constrained", "rewrite_column"]

SHADOW_PREFIX = "__enclavesql_shadow_"
_views = itertools.count()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rewrite_column(
    con: duckdb.DuckDBPyConnection,
    table: str,
    column: str,
    *,
    storage_type: str,
    read_type: str | None,
    transform: Callable[[pa.Array], pa.Array],
    batch_rows: int,
    progress: Callable[[int], None] | None = None,
    randomized: bool = False,
) -> int:
    """Replace ``table.column`` by ``transform`` of its values; returns the rows rewritten.

    ``read_type`` casts the values as they are read (plaintext to be encrypted); the column
    ends up with type ``storage_type``. ``randomized`` says the new values are RANDOMIZED
    ciphertext, which a PRIMARY KEY or UNIQUE constraint cannot hold. Must run inside an open
    transaction.

    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE t (a INT, b INT)")
    >>> _ = con.execute("INSERT INTO t VALUES (1, 10), (2, NULL)")
    >>> _ = con.execute("BEGIN")
    >>> rewrite_column(con, "t", "b", storage_type="VARCHAR", read_type=None,
    ...                transform=lambda v: v.cast(pa.string()), batch_rows=1)
    2
    >>> _ = con.execute("COMMIT")
    >>> con.execute("SELECT * FROM t ORDER BY a").fetchall()
    [(1, '10'), (2, None)]
    """
    quoted_table, quoted_column = _quote(table), _quote(column)
    if randomized and key_constrained(con, table, column):
        raise ProgrammingError(
            f"{table}.{column} has a PRIMARY KEY or UNIQUE constraint, which cannot be enforced "
            "on RANDOMIZED ciphertext; use ENCRYPTION_TYPE = DETERMINISTIC"
        )
    same_type = _current_type(con, table, column) == storage_type.upper()
    if not same_type and key_constrained(con, table, column):
        raise NotSupportedError(
            f"{table}.{column} has a PRIMARY KEY or UNIQUE constraint, and DuckDB cannot "
            "change the stored type of such a column; drop the constraint (recreate the "
            "table without it) first"
        )
    shadow = _quote(SHADOW_PREFIX + column)
    # Altering the table makes every concurrent INSERT, UPDATE or DELETE on it fail with a
    # transaction conflict, so no row can arrive under the old key while this one runs.
    con.execute(f"ALTER TABLE {quoted_table} ADD COLUMN {shadow} {storage_type}")
    # A constrained column must be updated in place (DuckDB cannot swap it); others may be.
    destination = quoted_column if same_type else shadow
    low, high, count = con.execute(
        f"SELECT min(rowid), max(rowid), count(*) FROM {quoted_table}"
    ).fetchall()[0]
    value = quoted_column if read_type is None else f"CAST({quoted_column} AS {read_type})"
    done = 0
    if count:
        for start in range(int(low), int(high) + 1, batch_rows):
            batch = _read_batch(
                con,
                f"SELECT rowid AS rid, {value} AS v FROM {quoted_table} "
                f"WHERE rowid >= {start} AND rowid < {start + batch_rows}",
                lossless=(read_type or "").upper() == "UUID",
            )
            if batch.num_rows == 0:
                continue
            values = transform(batch.column("v"))
            if len(values) != batch.num_rows:
                raise InternalError(
                    f"rewriting {table}.{column}: a batch of {batch.num_rows} rows came back "
                    f"with {len(values)} values"
                )
            _write_batch(con, quoted_table, destination, batch.column("rid"), values)
            done += batch.num_rows
            if progress is not None:
                progress(batch.num_rows)
    if not same_type:
        # USING keeps the column's position and NOT NULL; the shadow holds the new values.
        con.execute(
            f"ALTER TABLE {quoted_table} ALTER COLUMN {quoted_column} "
            f"SET DATA TYPE {storage_type} USING {shadow}"
        )
    con.execute(f"ALTER TABLE {quoted_table} DROP COLUMN {shadow}")
    return done


def enclave_encryption_transform(
    gateway: EnclaveGateway,
    query_id: int,
    *,
    cek_id: int,
    type_code: int,
    constant: bytes,
    declared_type: str,
    column: str,
) -> Callable[[pa.Array], pa.Array]:
    """A ``transform`` for ``rewrite_column`` that encrypts a plaintext column in the enclave.

    The host normalizes each batch to rule-v1 bytes (the column was plaintext, so the host
    holds these values already) and hands them to ENCRYPT under the query the client
    authorized; the cells come back under the column key, which the host never receives.
    ``cek_id``, ``type_code``, ``constant`` and ``declared_type`` come from the client's job.

    >>> class Echo:  # stands in for the gateway: returns the normalized bytes it is given
    ...     def encrypt(self, query_id, cek_id, type_code, constant, plaintexts):
    ...         return plaintexts
    >>> step = enclave_encryption_transform(Echo(), 1, cek_id=1, type_code=1, constant=b"\\x02",
    ...                                     declared_type="INT", column="t.v")
    >>> step(pa.array([1, None], pa.int32())).to_pylist()
    [b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00', None]
    """

    def transform(values: pa.Array) -> pa.Array:
        plaintexts = normalize(values, declared_type, column=column)
        cells: pa.Array = gateway.encrypt(query_id, cek_id, type_code, constant, plaintexts)
        return cells

    return transform


def _read_batch(con: duckdb.DuckDBPyConnection, sql: str, *, lossless: bool) -> pa.Table:
    if not lossless:
        return con.sql(sql).to_arrow_table()
    # DuckDB exports UUID as text unless asked for Arrow's uuid extension type, which is what
    # the client's codec takes; the setting is put back at once.
    before = con.execute("SELECT current_setting('arrow_lossless_conversion')").fetchall()[0][0]
    con.execute("SET arrow_lossless_conversion = true")
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.execute(f"SET arrow_lossless_conversion = {'true' if before else 'false'}")


def _current_type(con: duckdb.DuckDBPyConnection, table: str, column: str) -> str:
    rows = con.execute(
        "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND lower(table_name) = lower(?) "
        "AND lower(column_name) = lower(?)",
        [table, column],
    ).fetchall()
    return str(rows[0][0]).upper() if rows else ""


def key_constrained(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether ``table.column`` is part of a PRIMARY KEY or UNIQUE constraint."""
    rows = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "AND lower(table_name) = lower(?) AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
        [table],
    ).fetchall()
    return any(column.casefold() in {n.casefold() for n in row[0]} for row in rows)


def _write_batch(
    con: duckdb.DuckDBPyConnection,
    quoted_table: str,
    destination: str,
    row_ids: pa.ChunkedArray,
    values: pa.Array | pa.ChunkedArray,
) -> None:
    view = f"__enclavesql_rewrite_{next(_views)}"
    con.register(view, pa.table({"rid": row_ids, "v": values}))
    try:
        con.execute(
            f"UPDATE {quoted_table} SET {destination} = {view}.v FROM {view} "
            f"WHERE {quoted_table}.rowid = {view}.rid"
        )
    finally:
        # Unregistering inside an aborted transaction fails; the view dies with the connection.
        with contextlib.suppress(duckdb.Error):
            con.unregister(view)

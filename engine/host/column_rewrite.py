"""Rewrite every value of one column in place, inside the caller's DuckDB transaction.

It first adds a hidden shadow column, which also makes DuckDB refuse concurrent writes to the
table. One UPDATE per rowid range runs the values through the transform, registered as a
vectorized DuckDB function: into the column itself when the stored type stays the same, else
into the shadow, which ``ALTER COLUMN … SET DATA TYPE … USING`` swaps in. Nothing is durable
before the caller commits, so a crash leaves the old column.
It never sees a key: the values it hands out and takes back come from the ``transform`` (the
client's, or ``enclave_encryption_transform``, which normalizes here and encrypts in the enclave).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
from duckdb.func import FunctionNullHandling, PythonUDFType

from engine.errors import InternalError, NotSupportedError, ProgrammingError
from engine.normalization import normalize

if TYPE_CHECKING:
    from engine.host.enclave_gateway import EnclaveGateway

__all__ = [
    "SHADOW_PREFIX",
    "ciphertext_checkpoint",
    "enclave_encryption_transform",
    "key_constrained",
    "rewrite_column",
]

SHADOW_PREFIX = "__enclavesql_shadow_"
_function_numbers = itertools.count()


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
        udf = _TransformFunction(con, f"{table}.{column}", transform)
        with udf.registered(read_type or _current_type(con, table, column), storage_type):
            # A few large UPDATEs rather than one: each rowid range reports progress, and
            # Ctrl-C between them is a plain KeyboardInterrupt. Inside each, DuckDB feeds the
            # transform one vector at a time from its own threads.
            for start in range(int(low), int(high) + 1, batch_rows):
                rows = udf.update(
                    f"UPDATE {quoted_table} SET {destination} = {udf.name}({value}) "
                    f"WHERE rowid >= {start} AND rowid < {start + batch_rows}",
                    lossless=(read_type or "").upper() == "UUID",
                )
                if rows == 0:
                    continue
                done += rows
                if progress is not None:
                    progress(rows)
    if not same_type:
        # USING keeps the column's position and NOT NULL; the shadow holds the new values.
        con.execute(
            f"ALTER TABLE {quoted_table} ALTER COLUMN {quoted_column} "
            f"SET DATA TYPE {storage_type} USING {shadow}"
        )
    con.execute(f"ALTER TABLE {quoted_table} DROP COLUMN {shadow}")
    return done


class _TransformFunction:
    """``transform`` as a vectorized (Arrow) scalar function of ``con``, for one rewrite.

    DuckDB may call it from several threads at once; the transforms are thread-safe (their
    native calls release the GIL, which is what lets the threads overlap). An exception raised
    inside is kept and re-raised as itself after the statement fails, so a tampered cell is
    still a CellAuthenticationError and Ctrl-C still a KeyboardInterrupt.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        label: str,
        transform: Callable[[pa.Array], pa.Array],
    ) -> None:
        self.name = f"__enclavesql_transform_{next(_function_numbers)}"
        self._con = con
        self._label = label
        self._transform = transform
        self._failures: list[BaseException] = []

    def __call__(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        try:
            values = _one_array(values)
            result = _one_array(self._transform(values))
            if len(result) != len(values):
                raise InternalError(
                    f"rewriting {self._label}: a batch of {len(values)} rows came back with "
                    f"{len(result)} values"
                )
            return result
        except BaseException as failure:
            self._failures.append(failure)
            raise

    @contextlib.contextmanager
    def registered(self, input_type: str, output_type: str) -> Iterator[None]:
        self._con.create_function(
            self.name,
            self.__call__,
            [duckdb.sqltype(input_type)],
            duckdb.sqltype(output_type),
            type=PythonUDFType.ARROW,
            # NULLs go through the transform too, which keeps them NULL; side effects, so
            # DuckDB never folds or reuses a call (RANDOMIZED output differs every time).
            null_handling=FunctionNullHandling.SPECIAL,
            side_effects=True,
        )
        try:
            yield
        finally:
            # Removing a function inside an aborted transaction may fail; it is harmless to
            # leave, as its name is never used again.
            with contextlib.suppress(duckdb.Error):
                self._con.remove_function(self.name)

    def update(self, sql: str, *, lossless: bool) -> int:
        """Run one UPDATE through the function; returns the rows it changed."""
        try:
            with _lossless_arrow(self._con, lossless):
                rows = self._con.execute(sql).fetchall()
        except duckdb.Error:
            if self._failures:
                raise self._failures[0] from None
            raise
        if self._failures:  # DuckDB swallowed it; never commit around a failed batch
            raise self._failures[0]
        return int(rows[0][0]) if rows else 0


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


def _one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """DuckDB hands each vector over as a one-chunk ChunkedArray: take that chunk, no copy."""
    if not isinstance(values, pa.ChunkedArray):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


@contextlib.contextmanager
def ciphertext_checkpoint(con: duckdb.DuckDBPyConnection, *, enabled: bool) -> Iterator[None]:
    """While open, checkpoints store new segments uncompressed; wrap the commit of a rewrite
    whose new values are ciphertext in it.

    Ciphertext does not compress, yet DuckDB's checkpoint (which a commit of a large rewrite
    runs) spends most of its time trying dictionary and FSST compression on it: about three
    times the time of the UPDATE itself. The setting is global to the database instance, so
    other tables checkpointed in the same moment are stored uncompressed too (still correct,
    somewhat larger). The previous setting is put back on every exit.

    >>> con = duckdb.connect()
    >>> with ciphertext_checkpoint(con, enabled=True):
    ...     con.execute("SELECT current_setting('force_compression')").fetchall()
    [('uncompressed',)]
    >>> con.execute("SELECT current_setting('force_compression')").fetchall()
    [('auto',)]
    """
    if not enabled:
        yield
        return
    # Connections of this process to one file share the setting: the first one in saves it,
    # the last one out restores it (else interleaved rewrites could leave it uncompressed).
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    key = str(rows[0][0]) if rows and rows[0][0] else f"connection:{id(con)}"
    with _checkpoint_lock:
        entry = _checkpoint_users.get(key)
        if entry is None:
            before = con.execute("SELECT current_setting('force_compression')").fetchall()[0][0]
            con.execute("SET force_compression = 'uncompressed'")
            entry = _checkpoint_users[key] = [0, str(before)]
        entry[0] += 1
    try:
        yield
    finally:
        with _checkpoint_lock:
            entry[0] -= 1
            if entry[0] == 0:
                del _checkpoint_users[key]
                quoted = "'" + entry[1].replace("'", "''") + "'"
                con.execute(f"SET force_compression = {quoted}")


# Per database file: [rewrites inside ciphertext_checkpoint, the setting before the first].
_checkpoint_lock = threading.Lock()
_checkpoint_users: dict[str, list[Any]] = {}


@contextlib.contextmanager
def _lossless_arrow(con: duckdb.DuckDBPyConnection, lossless: bool) -> Iterator[None]:
    """DuckDB hands UUID to Arrow as text unless asked for Arrow's uuid extension type, which
    is what the client's codec takes; the setting is put back at once."""
    if not lossless:
        yield
        return
    before = con.execute("SELECT current_setting('arrow_lossless_conversion')").fetchall()[0][0]
    con.execute("SET arrow_lossless_conversion = true")
    try:
        yield
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

"""The PEP 249 Cursor: execute, executemany, the fetch methods, description and rowcount.

It is a thin front over the Connection, which runs statements through the client and the host;
it holds one result as Arrow and turns it into Python rows batch by batch on demand (a small
result comes as Python column lists, its Arrow table built only for fetch_arrow_table and
fetchdf). It must not touch keys, DuckDB or the SQL front end itself.
"""

from __future__ import annotations

import datetime
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import InterfaceError, ProgrammingError

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from engine.client.small_results import SmallResult
    from engine.connection import Connection, StatementResult

__all__ = ["Cursor"]

Description = tuple[tuple[str, str, None, None, None, None, None], ...]


def _python_values(array: Any, type_code: str) -> list[Any]:
    """One Arrow column as Python values, as DuckDB's own fetchall would give them."""
    return _as_duckdb(array.to_pylist(maps_as_pydicts="lossy"), array.type, type_code)


def _as_duckdb(values: list[Any], arrow_type: Any, type_code: str) -> list[Any]:
    """A column's Python values from Arrow (``to_pylist``) as DuckDB's fetchall gives them."""
    import pyarrow as pa

    if type_code == "UUID" and pa.types.is_string(arrow_type):
        return [None if v is None else uuid.UUID(v) for v in values]
    if type_code in ("HUGEINT", "UHUGEINT"):
        return [None if v is None else int(v) for v in values]
    if type_code == "INTERVAL":
        # DuckDB's own conversion counts a month as 30 days.
        return [
            None
            if v is None
            else datetime.timedelta(days=v.months * 30 + v.days, microseconds=v.nanoseconds // 1000)
            for v in values
        ]
    return values


def _check_parameters(parameters: object) -> Sequence[object]:
    if type(parameters) is tuple or type(parameters) is list:
        return parameters  # the common case, without the ABC checks (executemany's hot loop)
    if parameters is None:
        return ()
    if isinstance(parameters, (str, bytes, bytearray)) or not isinstance(parameters, Sequence):
        if isinstance(parameters, dict):
            raise ProgrammingError(
                "named parameters are not supported; paramstyle is qmark, so pass a sequence "
                "with one value per ? marker"
            )
        raise ProgrammingError(
            f"parameters must be a sequence (list or tuple) with one value per ? marker, not "
            f"{type(parameters).__name__}"
        )
    return parameters


class Cursor:
    """A PEP 249 cursor over one Connection.

    >>> import engine
    >>> con = engine.connect(":memory:")
    >>> cur = con.cursor()
    >>> cur.execute("SELECT 1 AS one, 'a' AS letter").fetchall()
    [(1, 'a')]
    >>> [column[:2] for column in cur.description]
    [('one', 'INTEGER'), ('letter', 'VARCHAR')]
    >>> con.close()
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._closed = False
        self.arraysize = 1
        self._reset()

    def _reset(self) -> None:
        self._description: Description | None = None
        self._encrypted: tuple[bool, ...] | None = None
        self._rowcount = -1
        self._table: pa.Table | None = None
        self._small: SmallResult | None = None  # a small result, in place of _table
        self._small_rows: list[tuple[Any, ...]] | None = None  # its rows, until fetched
        self._batches: Iterator[Any] = iter(())
        self._buffer: deque[tuple[Any, ...]] = deque()

    # Properties of PEP 249.

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def description(self) -> Description | None:
        """One 7-tuple per result column: (name, type_code, None × 5). For encrypted columns the
        type code is the declared plaintext type; None after a statement with no rows."""
        return self._description

    @property
    def encrypted_columns(self) -> tuple[bool, ...] | None:
        """For each result column, whether it comes from an encrypted column (None without
        a result). An extension beyond PEP 249, for tools that mark such columns."""
        return self._encrypted

    @property
    def rowcount(self) -> int:
        """Rows affected by the last DML statement; -1 for queries and other statements."""
        return self._rowcount

    @property
    def closed(self) -> bool:
        return self._closed or self._connection.closed

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed; open a new one with connection.cursor()")
        if self._connection.closed:
            raise InterfaceError("the connection is closed; open a new one with engine.connect()")

    def close(self) -> None:
        """Close the cursor; later calls raise InterfaceError. Closing twice is allowed."""
        self._closed = True
        self._reset()

    def setinputsizes(self, sizes: object) -> None:
        """Accepted and ignored, as PEP 249 allows."""
        self._check_open()

    def setoutputsize(self, size: object, column: object = None) -> None:
        """Accepted and ignored, as PEP 249 allows."""
        self._check_open()

    # Execution.

    def _take(self, result: StatementResult) -> None:
        """Keep ``result``; the caller has reset the cursor."""
        self._rowcount = result.rowcount
        small, table = result.small, result.table
        if small is not None:
            names = small.names
        elif table is not None:
            names = table.column_names
        else:
            return
        self._description = tuple(
            (name, type_code, None, None, None, None, None)
            for name, type_code in zip(names, result.type_codes, strict=True)
        )
        self._encrypted = result.encrypted or tuple(False for _ in result.type_codes)
        if small is not None:
            self._small = small
            columns = [
                _as_duckdb(values, arrow_type, type_code)
                for values, arrow_type, type_code in zip(
                    small.values, small.types, result.type_codes, strict=True
                )
            ]
            self._small_rows = list(zip(*columns, strict=True)) if columns else []
            return
        assert table is not None
        self._table = table
        self._batches = iter(table.to_batches())

    def execute(self, operation: str, parameters: Sequence[object] | None = None) -> Cursor:
        """Run one or more statements; ``?`` markers take ``parameters`` in order."""
        self._check_open()
        if not isinstance(operation, str):
            raise ProgrammingError("the operation must be SQL text (a str)")
        self._reset()
        self._take(self._connection._run(operation, _check_parameters(parameters)))
        return self

    def executemany(self, operation: str, seq_of_parameters: Any) -> Cursor:
        """Run one statement for each parameter sequence, atomically; an INSERT … VALUES is
        encrypted and inserted as whole columns."""
        self._check_open()
        if not isinstance(operation, str):
            raise ProgrammingError("the operation must be SQL text (a str)")
        rows = [_check_parameters(row) for row in seq_of_parameters]
        self._reset()
        self._take(self._connection._run_many(operation, rows))
        return self

    # Fetching.

    def _require_result(self) -> None:
        self._check_open()
        if self._table is None and self._small is None:
            raise ProgrammingError("the last statement returned no rows to fetch; run a query")

    def _fill(self) -> bool:
        if self._small_rows is not None:
            rows, self._small_rows = self._small_rows, None
            self._buffer.extend(rows)
            return bool(rows)
        for batch in self._batches:
            if batch.num_rows == 0:
                continue
            types = [column[1] for column in self._description or ()]
            columns = [_python_values(batch.column(i), types[i]) for i in range(batch.num_columns)]
            self._buffer.extend(zip(*columns, strict=True))
            return True
        return False

    def fetchone(self) -> tuple[Any, ...] | None:
        self._require_result()
        if not self._buffer and not self._fill():
            return None
        return self._buffer.popleft()

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._require_result()
        wanted = self.arraysize if size is None else size
        rows: list[tuple[Any, ...]] = []
        while len(rows) < wanted:
            if not self._buffer and not self._fill():
                break
            while self._buffer and len(rows) < wanted:
                rows.append(self._buffer.popleft())
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._require_result()
        rows = list(self._buffer)
        self._buffer.clear()
        while self._fill():
            rows.extend(self._buffer)
            self._buffer.clear()
        return rows

    def fetch_arrow_table(self) -> pa.Table:
        """The remaining rows as an Arrow table (encrypted columns decrypted)."""
        import pyarrow as pa

        self._require_result()
        if self._buffer:
            raise ProgrammingError(
                "fetch_arrow_table after fetchone or fetchmany is not supported; run the "
                "query again"
            )
        if self._small is not None:
            table = self._small.arrow()
            if self._small_rows is None:  # already fetched: what remains is no rows
                return pa.Table.from_batches([], schema=table.schema)
            self._small_rows = None
            return table
        assert self._table is not None
        schema = self._table.schema
        batches = list(self._batches)
        self._batches = iter(())
        return pa.Table.from_batches(batches, schema=schema)

    def fetchdf(self) -> pandas.DataFrame:
        """The remaining rows as a pandas DataFrame."""
        return self.fetch_arrow_table().to_pandas()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

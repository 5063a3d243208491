"""The vectorized DuckDB UDFs behind rewritten enclave predicates, registered per connection.

``__ee_compare(cells, query_id, cek_id, type_code, operator, constant)`` and
``__ee_compare_columns(left, right, query_id, cek_id, type_code, operator)`` hand each DuckDB
vector to the enclave in one call (the binding releases the GIL) and return its booleans. They
must not look at cell contents or keep anything between calls; NULL rows never reach them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import duckdb
import pyarrow as pa
from duckdb import sqltypes
from duckdb.func import PythonUDFType

from engine.errors import Error
from engine.sql.rewrite_enclave_predicates import COMPARE_COLUMNS_FUNCTION, COMPARE_FUNCTION

__all__ = ["register_enclave_udfs"]


def _scalar(array: Any) -> int:
    # Query id, cek id, type and operator are bound parameters: one value for the vector.
    return int(array[0].as_py())


def _cells(array: Any) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def register_enclave_udfs(
    connection: duckdb.DuckDBPyConnection,
    gateway: Any,
    failures: MutableMapping[int, BaseException] | None = None,
) -> None:
    """Register the enclave UDFs on ``connection``; each call goes through ``gateway`` (an
    EnclaveGateway, or anything with its ``compare`` method).

    DuckDB turns an exception raised in a UDF into its own error type and text, so the first
    PEP 249 error of each query id is also kept in ``failures``; the host re-raises it.

    >>> import duckdb
    >>> class Fake:
    ...     def compare(self, query_id, cek_id, type_code, operator, constant, cells, right=None):
    ...         return pa.array([len(c.as_py()) > len(constant) for c in cells])
    >>> con = duckdb.connect()
    >>> register_enclave_udfs(con, Fake())
    >>> con.execute("SELECT __ee_compare('abc'::BLOB, 1::UBIGINT, 1, 1, 1, 'ab'::BLOB)").fetchall()
    [(True,)]
    """

    def call(
        cells: Any,
        right: Any | None,
        query_id: Any,
        cek_id: Any,
        type_code: Any,
        operator: Any,
        constant: Any | None,
    ) -> pa.Array:
        # An empty vector has no first row to read the bound parameters from.
        if len(cells) == 0:
            return pa.array([], pa.bool_())
        query = _scalar(query_id)
        blob = b"" if constant is None else constant[0].as_py()
        args = [_scalar(cek_id), _scalar(type_code), _scalar(operator), blob, _cells(cells)]
        if right is not None:
            args.append(_cells(right))
        try:
            return gateway.compare(query, *args)
        except Error as error:
            if failures is not None:
                failures.setdefault(query, error)
            raise

    def compare(
        cells: Any, query_id: Any, cek_id: Any, type_code: Any, operator: Any, constant: Any
    ) -> pa.Array:
        return call(cells, None, query_id, cek_id, type_code, operator, constant)

    def compare_columns(
        left: Any, right: Any, query_id: Any, cek_id: Any, type_code: Any, operator: Any
    ) -> pa.Array:
        return call(left, right, query_id, cek_id, type_code, operator, None)

    blob, ubigint, integer = sqltypes.BLOB, sqltypes.UBIGINT, sqltypes.INTEGER
    connection.create_function(
        COMPARE_FUNCTION,
        compare,
        [blob, ubigint, integer, integer, integer, blob],
        sqltypes.BOOLEAN,
        type=PythonUDFType.ARROW,
        side_effects=False,
    )
    connection.create_function(
        COMPARE_COLUMNS_FUNCTION,
        compare_columns,
        [blob, blob, ubigint, integer, integer, integer],
        sqltypes.BOOLEAN,
        type=PythonUDFType.ARROW,
        side_effects=False,
    )

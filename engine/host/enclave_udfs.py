"""The vectorized DuckDB UDFs behind rewritten enclave predicates, registered per connection.

``__ee_filter_<k>(cells_1 .. cells_k, query_id, (cek_id, type, operator, constant_ref) x k)``
is SQL's AND of k enclave predicates in one call per DuckDB vector; ``__ee_compare`` and
``__ee_compare_columns`` are the older one-predicate forms (HAVING and column pairs use them).
They must not look at cell contents or keep anything but constants between calls.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from duckdb import sqltypes
from duckdb.func import FunctionNullHandling, PythonUDFType

from enclave import duckdb_extension
from engine.errors import Error, InternalError
from engine.predicate_program import Predicate, unpack_predicates
from engine.sql.rewrite_enclave_predicates import (
    COMPARE_COLUMNS_FUNCTION,
    COMPARE_FUNCTION,
    MAX_CONJUNCTS,
    filter_function,
)

__all__ = ["UDF_FAILURES", "constant_ref", "register_enclave_udfs"]

_Result = TypeVar("_Result")

# The predicate programs behind "enclave_program" markers, and the layouts of native stage
# aggregates. A constant argument of a DuckDB UDF is materialized once per row of every vector
# (measured: about 10 ms per BLOB argument for a 600k-row scan, half of the whole UDF floor), so
# the host binds a small integer instead and the UDF looks the blob up here. Blobs are
# ciphertext and codes the host holds anyway; the table is content-addressed and bounded,
# oldest first out.
_REF_LIMIT = 4096
_REF_BYTES_LIMIT = 64 << 20
_refs_lock = threading.Lock()
_ref_of: dict[bytes, int] = {}
_blob_of: dict[int, bytes] = {}
_ref_state = {"next": 1, "bytes": 0}


def constant_ref(blob: bytes) -> int:
    """A small integer that stands for ``blob`` in enclave UDF calls (equal blobs, equal refs).

    >>> constant_ref(b"cell") == constant_ref(b"cell") != constant_ref(b"other")
    True
    """
    key = bytes(blob)
    with _refs_lock:
        ref = _ref_of.get(key)
        if ref is not None:
            return ref
        while _blob_of and (
            len(_blob_of) >= _REF_LIMIT or _ref_state["bytes"] + len(key) > _REF_BYTES_LIMIT
        ):
            oldest = next(iter(_blob_of))
            _ref_state["bytes"] -= len(_blob_of[oldest])
            del _ref_of[_blob_of.pop(oldest)]
            duckdb_extension.drop_constant(oldest)
        ref = _ref_state["next"]
        _ref_state["next"] = ref + 1
        _ref_of[key] = ref
        _blob_of[ref] = key
        _ref_state["bytes"] += len(key)
        duckdb_extension.put_constant(ref, key)
        return ref


def _blob(ref: int) -> bytes:
    blob = _blob_of.get(ref)
    if blob is None:
        raise InternalError(
            "an enclave predicate's constant is no longer in the host's table (more than "
            f"{_REF_LIMIT} other constants were bound while the statement ran); run it again"
        )
    return blob


def _scalar(array: Any) -> int:
    # Query id, cek id, type, operator and constant ref are bound parameters: one value a vector.
    return int(array[0].as_py())


def _cells(array: Any) -> pa.Array:
    if not isinstance(array, pa.ChunkedArray):
        return array
    # DuckDB hands over one chunk a vector; combine_chunks would copy it (about 15 us).
    return array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()


# The first PEP 249 error of each query id, for every Python UDF of this process. Connections of
# this process to one file share one set of UDFs (engine/host/udf_owners.py), whose failures
# land here whichever host runs the query; query ids are random 64-bit enclave ids, so one
# table serves every host.
UDF_FAILURES: dict[int, BaseException] = {}


def register_enclave_udfs(
    connection: duckdb.DuckDBPyConnection,
    gateway: Any,
    failures: MutableMapping[int, BaseException] | None = None,
    *,
    native_filters: bool = False,
) -> None:
    """Register the enclave UDFs on ``connection``; each call goes through ``gateway`` (an
    EnclaveGateway, or anything with its ``compare`` and ``filter`` methods). With
    ``native_filters`` the ``__ee_filter_<k>`` and ``__ee_compare_columns`` functions are left
    out: the native extension (enclave/duckdb_extension.py) already registered them for the
    whole database.

    DuckDB turns an exception raised in a UDF into its own error type and text, so the first
    PEP 249 error of each query id is also kept in ``failures``; the host re-raises it.

    >>> import duckdb
    >>> class Fake:
    ...     def compare(self, query_id, cek_id, type_code, operator, constant, cells, right=None):
    ...         return pa.array([len(c.as_py()) > len(constant) for c in cells])
    ...     def filter(self, query_id, predicates, columns):
    ...         return pa.array([len(c.as_py()) == predicates[0][2] for c in columns[0]])
    >>> con = duckdb.connect()
    >>> register_enclave_udfs(con, Fake())
    >>> con.execute("SELECT __ee_compare('abc'::BLOB, 1::UBIGINT, 1, 1, 1, 'ab'::BLOB)").fetchall()
    [(True,)]
    >>> from engine.predicate_program import pack_predicates
    >>> ref = constant_ref(pack_predicates([(1, 1, 3, b"c")]))
    >>> sql = "SELECT __ee_filter_1('abc'::BLOB, 1::UBIGINT, ?::UBIGINT)"
    >>> con.execute(sql, [ref]).fetchall()
    [(True,)]
    """

    def guarded(query: int, work: Callable[[], _Result]) -> _Result:
        try:
            return work()
        except Error as error:
            if failures is not None:
                failures.setdefault(query, error)
            raise

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
        return guarded(query, lambda: gateway.compare(query, *args))

    def compare(
        cells: Any, query_id: Any, cek_id: Any, type_code: Any, operator: Any, constant: Any
    ) -> pa.Array:
        return call(cells, None, query_id, cek_id, type_code, operator, constant)

    def compare_columns(
        left: Any, right: Any, query_id: Any, cek_id: Any, type_code: Any, operator: Any
    ) -> pa.Array:
        return call(left, right, query_id, cek_id, type_code, operator, None)

    # The predicate list of each bound program: unpacked once, not per vector.
    prepared: dict[int, list[Predicate]] = {}

    def make_filter(k: int) -> Callable[..., pa.Array]:
        def run(*args: Any) -> pa.Array:
            columns = args[:k]
            if len(columns[0]) == 0:
                return pa.array([], pa.bool_())
            query, program = _scalar(args[k]), _scalar(args[k + 1])
            predicates = prepared.get(program)
            if predicates is None:
                predicates = guarded(query, lambda: unpack_predicates(_blob(program), k))
                if len(prepared) > 256:
                    prepared.clear()
                prepared[program] = predicates
            cells = [_cells(array) for array in columns]
            return guarded(query, lambda: gateway.filter(query, predicates, cells))

        # DuckDB reads the arity from the signature; *args alone would read as none.
        names = [f"cells_{i}" for i in range(k)] + ["query_id", "program"]
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY) for name in names]
        )
        return run

    blob, ubigint, integer = sqltypes.BLOB, sqltypes.UBIGINT, sqltypes.INTEGER
    connection.create_function(
        COMPARE_FUNCTION,
        compare,
        [blob, ubigint, integer, integer, integer, blob],
        sqltypes.BOOLEAN,
        type=PythonUDFType.ARROW,
        side_effects=False,
    )
    if not native_filters:
        connection.create_function(
            COMPARE_COLUMNS_FUNCTION,
            compare_columns,
            [blob, blob, ubigint, integer, integer, integer],
            sqltypes.BOOLEAN,
            type=PythonUDFType.ARROW,
            side_effects=False,
        )
    for k in range(1, 0 if native_filters else MAX_CONJUNCTS + 1):
        arguments: list[Any] = [blob] * k + [ubigint, ubigint]
        connection.create_function(
            filter_function(k),
            make_filter(k),
            arguments,
            sqltypes.BOOLEAN,
            type=PythonUDFType.ARROW,
            # NULL cells must reach the enclave: FALSE AND NULL is FALSE, and DuckDB's default
            # would answer NULL for any row with a NULL argument without calling us.
            null_handling=FunctionNullHandling.SPECIAL,
            side_effects=False,
        )

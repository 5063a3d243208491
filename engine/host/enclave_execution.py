"""Host-side steps of a statement with enclave operations: bind the query id, finish aggregates.

The host runs the rewritten SQL with the query id of begin_query bound to every query-id
marker; afterwards each LIST column of cells that an enclave aggregate left in the result goes
to the enclave in one call and comes back as one cell per row. It must not decrypt, and must not
call the enclave with anything but cells and the client's codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InternalError, ProgrammingError
from engine.sql.plan import AggregateCall, Plan
from engine.sql.rewrite_enclave_joins import GROUP_ID

__all__ = ["bind_query_id", "finish_aggregates", "join_group_ids"]


def bind_query_id(plan: Plan, values: Sequence[object], query_id: int) -> list[object]:
    """``values`` with the query id at every ``enclave_query`` marker of ``plan``.

    >>> from engine.sql.plan import ParameterSpec
    >>> plan = Plan("query", "SELECT ?, ?", (ParameterSpec(("enclave_query", None), None),
    ...                                      ParameterSpec(("user", 0), None)))
    >>> bind_query_id(plan, [None, 7], 99)
    [99, 7]
    """
    if len(values) != len(plan.parameters):
        raise ProgrammingError(
            f"the statement has {len(plan.parameters)} parameter marker(s) (?) but "
            f"{len(values)} value(s) were given"
        )
    bound = list(values)
    for index, spec in enumerate(plan.parameters):
        if spec.source[0] == "enclave_query":
            bound[index] = query_id
    return bound


def _as_list_array(column: Any) -> pa.Array:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ChunkedArray):  # an empty chunked array combines to itself
        array = pa.array([], pa.list_(pa.binary()))
    if not pa.types.is_list(array.type):
        raise InternalError("an enclave aggregate's column does not hold lists of cells")
    return array


def _column(table: pa.Table, name: str) -> pa.Array:
    for index, column_name in enumerate(table.column_names):
        if column_name.casefold() == name.casefold():
            column = table.column(index)
            return column.combine_chunks() if column.num_chunks else pa.array([], pa.binary())
    raise InternalError("a join stage lacks the column it joins on")


def join_group_ids(
    left: pa.Table,
    right: pa.Table,
    left_column: str,
    right_column: str,
    call: AggregateCall,
    gateway: Any,
    query_id: int,
) -> tuple[pa.Table, pa.Table]:
    """Both sides of an equi-JOIN with ``__ee_gid``: group ids over both sides' cells at once,
    so equal values on either side get equal ids (one enclave call; NULL cells get NULL).

    >>> class Fake:
    ...     def group(self, q, cek, type_code, cells):
    ...         ids = {v: i for i, v in enumerate(sorted(set(cells.to_pylist())))}
    ...         return pa.array([ids[v] for v in cells.to_pylist()], pa.int64())
    >>> left = pa.table({"x": pa.array([b"b", b"a"], pa.binary())})
    >>> right = pa.table({"y": pa.array([b"a", b"c"], pa.binary())})
    >>> call = AggregateCall(0, 1, 1, 11, kind="group", stage=0)
    >>> a, b = join_group_ids(left, right, "x", "y", call, Fake(), 9)
    >>> a.column("__ee_gid").to_pylist(), b.column("__ee_gid").to_pylist()
    ([1, 0], [0, 2])
    """
    cells = pa.concat_arrays(
        [
            _column(left, left_column).cast(pa.binary()),
            _column(right, right_column).cast(pa.binary()),
        ]
    )
    ids = gateway.group(query_id, call.cek_id, call.type_code, cells)
    return (
        left.append_column(GROUP_ID, ids.slice(0, left.num_rows)),
        right.append_column(GROUP_ID, ids.slice(left.num_rows)),
    )


def finish_aggregates(
    table: pa.Table, calls: Sequence[AggregateCall], gateway: Any, query_id: int
) -> pa.Table:
    """Replace each aggregate's LIST column by the enclave's one result cell per row, and each
    ORDER BY column's cells by the enclave's ranks.

    Every row is one group: its list's cells get the row number as group id, NULL cells are
    skipped by the enclave, and an empty or NULL list gives NULL (0 for COUNT_DISTINCT).

    >>> class Fake:
    ...     def aggregate(self, q, cek, type_code, op, cells, group_ids, count, scale=0):
    ...         sums = [b""] * count
    ...         for cell, group in zip(cells.to_pylist(), group_ids.to_pylist()):
    ...             sums[group] += cell
    ...         return pa.array(sums, pa.binary())
    >>> lists = pa.array([[b"a", b"b"], [b"c"]], pa.list_(pa.binary()))
    >>> table = pa.table({"g": [1, 2], "s": lists})
    >>> finish_aggregates(table, [AggregateCall(1, 1, 1, 12)], Fake(), 5).column("s").to_pylist()
    [b'ab', b'c']
    """
    for call in calls:
        name = table.column_names[call.result_column]
        if call.kind in ("rank", "group"):
            # An ORDER BY or GROUP BY column: its cells become dense ranks or group ids, both
            # ascending with the values (NULL stays NULL).
            column = table.column(call.result_column)
            cells = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            if isinstance(cells, pa.ChunkedArray):
                cells = pa.array([], pa.binary())
            method = gateway.rank if call.kind == "rank" else gateway.group
            ids = method(query_id, call.cek_id, call.type_code, cells)
            table = table.set_column(call.result_column, name, ids)
            continue
        lists = _as_list_array(table.column(call.result_column))
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        cells = pc.list_flatten(lists)
        if pa.types.is_large_binary(cells.type) or cells.type != pa.binary():
            cells = cells.cast(pa.binary())
        group_ids = pa.array(np.repeat(np.arange(len(lists), dtype=np.int64), lengths))
        result = gateway.aggregate(
            query_id,
            call.cek_id,
            call.type_code,
            call.operator,
            cells,
            group_ids,
            len(lists),
            call.decimal_scale,
        )
        table = table.set_column(call.result_column, name, result)
    return table

"""Host-side steps of a statement with enclave operations: bind the query id, finish aggregates.

The host runs the rewritten SQL with the query id of begin_query bound to every query-id
marker; afterwards the LIST columns of cells that enclave aggregates left in the result go to
the enclave (every SUM and AVG of the stage in one call) and come back as one cell per row. It
must not decrypt, and must not call the enclave with anything but cells and the client's codes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InternalError, ProgrammingError
from engine.host.enclave_udfs import constant_ref
from engine.sql.plan import AggregateCall, Plan
from engine.sql.rewrite_enclave_aggregates import parse_shared_slot_name
from engine.sql.rewrite_enclave_joins import GROUP_ID

# Below this many bytes of stage columns the enclave calls run one after another: starting
# threads would cost more than a small query's whole enclave work.
_PARALLEL_BYTES = 1 << 20
# enclave.h: EE_OP_SUM, EE_OP_AVG (plain aggregates the stage call takes; tests check them
# against enclave.binding), and the stage call's limits (EE_EXPR_MAX_SLOTS,
# EE_STAGE_MAX_OUTPUTS, EE_STAGE_LAYOUT_VERSION).
STAGE_OPERATORS = (12, 13)
STAGE_MAX_SLOTS = 16
STAGE_MAX_OUTPUTS = 32
_STAGE_LAYOUT_VERSION = 1

__all__ = [
    "STAGE_MAX_OUTPUTS",
    "STAGE_MAX_SLOTS",
    "STAGE_OPERATORS",
    "append_group_ids",
    "bind_query_id",
    "finish_aggregates",
    "join_group_ids",
    "normalized_slot",
    "operand_count",
    "stage_layout",
]


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
        elif spec.source[0] == "enclave_program":
            # A small integer for the client's predicate program (see enclave_udfs.constant_ref).
            bound[index] = constant_ref(_constant_bytes(values[index]))
    return bound


def _constant_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProgrammingError("an enclave filter's program must be bytes from the client")
    return bytes(value)


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
    raise InternalError("a stage-zero read lacks the column it groups or joins on")


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


def _keep_top_k(table: pa.Table, call: AggregateCall, gateway: Any, query_id: int) -> pa.Table:
    """The rows of ``table`` that the enclave selected for ORDER BY ... LIMIT, with the cells of
    the sort column replaced by their ranks (NULL stays NULL); -1 marks a row not selected.

    >>> class Fake:
    ...     def top_k(self, q, cek, type_code, constant, cells):
    ...         return pa.array([1, -1, None, 0], pa.int64())
    >>> table = pa.table({"id": [1, 2, 3, 4], "x": pa.array([b"b", b"z", None, b"a"])})
    >>> call = AggregateCall(1, 1, 1, 24, kind="top_k", constant=bytes(10))
    >>> _keep_top_k(table, call, Fake(), 5).to_pydict()
    {'id': [1, 3, 4], 'x': [1, None, 0]}
    >>> table = table.append_column("r", pa.nulls(4, pa.int64()))
    >>> call = AggregateCall(2, 1, 1, 24, kind="top_k", constant=bytes(10), source_column=1)
    >>> _keep_top_k(table, call, Fake(), 5).to_pydict()
    {'id': [1, 3, 4], 'x': [b'b', None, b'a'], 'r': [1, None, 0]}
    """
    # The key's cells are in result_column, or (a key that is also a result column) in
    # source_column, so that stage one does not return them twice.
    source = call.result_column if call.source_column is None else call.source_column
    column = table.column(source)
    cells = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(cells, pa.ChunkedArray):
        cells = pa.array([], pa.binary())
    ranks = gateway.top_k(query_id, call.cek_id, call.type_code, call.constant, cells)
    table = table.set_column(call.result_column, table.column_names[call.result_column], ranks)
    return table.filter(pc.fill_null(pc.not_equal(ranks, -1), True))


def append_group_ids(
    table: pa.Table,
    columns: Sequence[str],
    id_columns: Sequence[str],
    calls: Sequence[AggregateCall],
    gateway: Any,
    query_id: int,
) -> pa.Table:
    """``table`` with the enclave's group ids over each of ``columns``' cells appended as the
    matching ``id_columns`` (one GROUP call per column; NULL cells get NULL ids).

    >>> class Fake:
    ...     def group(self, q, cek, type_code, cells):
    ...         ids = {v: i for i, v in enumerate(sorted(set(cells.to_pylist()) - {None}))}
    ...         return pa.array([ids.get(v) for v in cells.to_pylist()], pa.int64())
    >>> table = pa.table({"x": pa.array([b"b", None, b"a", b"b"], pa.binary())})
    >>> call = AggregateCall(0, 1, 1, 11, kind="group", stage=0)
    >>> append_group_ids(table, ["x"], ["__ee_id"], [call], Fake(), 9).column(1).to_pylist()
    [1, None, 0, 1]
    """
    for column, id_column, call in zip(columns, id_columns, calls, strict=True):
        cells = _column(table, column).cast(pa.binary())
        # A nested ORDER BY's stage (rewrite_enclave_order) appends ranks: the same numbers,
        # under the RANK grant the client gave for it.
        method = gateway.rank if call.kind == "rank" else gateway.group
        table = table.append_column(id_column, method(query_id, call.cek_id, call.type_code, cells))
    return table


def normalized_slot(values: pa.Array) -> pa.Array:
    """One slot of an expression aggregate as the enclave reads it: cells stay as they are;
    a plaintext BIGINT, DECIMAL(38, s) or DOUBLE column becomes its normalized form (8-byte
    LE integer, sign byte + 16-byte LE magnitude, 8-byte LE IEEE double). NULL stays NULL.

    >>> import decimal
    >>> slot = normalized_slot(pa.array([decimal.Decimal("-2.50"), None], pa.decimal128(38, 2)))
    >>> [value.hex() if value else value for value in slot.to_pylist()]
    ['00fa000000000000000000000000000000', None]
    >>> normalized_slot(pa.array([1, -1], pa.int64())).to_pylist()[1].hex()
    'ffffffffffffffff'
    """
    kind = values.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return values.cast(pa.binary())
    count = len(values)
    if pa.types.is_int64(kind) or pa.types.is_float64(kind):
        dtype = np.int64 if pa.types.is_int64(kind) else np.float64
        raw = pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(dtype)
        width, data = 8, raw.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    elif pa.types.is_decimal128(kind):
        # Arrow keeps DECIMAL as 16-byte LE two's complement; the enclave wants sign and
        # magnitude, so negative values are negated as 128-bit numbers (low word first).
        filled = pc.fill_null(values, pa.scalar(0, kind).cast(kind))
        words = np.frombuffer(filled.buffers()[1], dtype="<u8").reshape(-1, 2)
        words = words[filled.offset : filled.offset + count]
        low, high = words[:, 0].copy(), words[:, 1].copy()
        negative = (high >> np.uint64(63)).astype(bool)
        negated_low = ~low + np.uint64(1)
        negated_high = ~high + (negated_low == 0).astype(np.uint64)
        low = np.where(negative, negated_low, low)
        high = np.where(negative, negated_high, high)
        out = np.empty((count, 17), dtype=np.uint8)
        out[:, 0] = np.where(negative, 0, 1)
        out[:, 1:9] = low.astype("<u8").view(np.uint8).reshape(count, 8)
        out[:, 9:] = high.astype("<u8").view(np.uint8).reshape(count, 8)
        width, data = 17, out.tobytes()
    else:
        raise InternalError("an expression aggregate's plaintext slot has an unexpected type")
    fixed = pa.Array.from_buffers(pa.binary(width), count, [None, pa.py_buffer(data)])
    return pc.if_else(values.is_valid(), fixed, pa.scalar(None, pa.binary(width))).cast(pa.binary())


def _expression_aggregate(column: Any, call: AggregateCall, gateway: Any, query_id: int) -> Any:
    """One enclave call for an expression aggregate's lists of per-row structs (one field
    per program slot), each row's list being one group."""
    if isinstance(column, pa.ChunkedArray):
        lists = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    else:
        lists = column
    if isinstance(lists, pa.ChunkedArray):  # an empty chunked array combines to itself
        lists = pa.array([], column.type)
    if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
        raise InternalError("an expression aggregate's column does not hold lists of rows")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    rows = pc.list_flatten(lists)
    slots = [normalized_slot(field) for field in rows.flatten()]
    group_ids = pa.array(np.repeat(np.arange(len(lists), dtype=np.int64), lengths))
    return gateway.aggregate_expression(
        query_id,
        call.cek_id,
        call.type_code,
        call.operator,
        call.constant,
        slots,
        group_ids,
        len(lists),
    )


def _finish_one(column: Any, call: AggregateCall, gateway: Any, query_id: int) -> Any:
    """The enclave's replacement for one stage column: ranks or group ids for an ORDER BY or
    GROUP BY column (ascending with the values, NULL stays NULL), one cell per row for an
    aggregate's lists."""
    if call.kind in ("rank", "group"):
        cells = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if isinstance(cells, pa.ChunkedArray):
            cells = pa.array([], pa.binary())
        method = gateway.rank if call.kind == "rank" else gateway.group
        return method(query_id, call.cek_id, call.type_code, cells)
    if call.kind == "expression":
        return _expression_aggregate(column, call, gateway, query_id)
    lists = _as_list_array(column)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    cells = pc.list_flatten(lists)
    if pa.types.is_large_binary(cells.type) or cells.type != pa.binary():
        cells = cells.cast(pa.binary())
    group_ids = pa.array(np.repeat(np.arange(len(lists), dtype=np.int64), lengths))
    return gateway.aggregate(
        query_id,
        call.cek_id,
        call.type_code,
        call.operator,
        cells,
        group_ids,
        len(lists),
        call.decimal_scale,
    )


def _list_column(table: pa.Table, index: int) -> pa.Array:
    column = table.column(index)
    lists = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if isinstance(lists, pa.ChunkedArray):  # an empty chunked array combines to itself
        lists = pa.array([], column.type)
    return lists


def _shared_readers(table: pa.Table) -> tuple[int, dict[tuple[int, int], int]] | None:
    """The column holding several aggregates' shared operands (rewrite_enclave_aggregates) and,
    for each (result column, operand), the struct field that holds it; None when there is none.
    """
    for index, field in enumerate(table.schema):
        kind = field.type
        if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)):
            continue
        names = [kind.value_type.field(i).name for i in range(kind.value_type.num_fields)]
        parsed = [parse_shared_slot_name(name) for name in names]
        if not parsed or any(readers is None for readers in parsed):
            continue
        return index, {
            reader: position for position, readers in enumerate(parsed) for reader in readers or ()
        }
    return None


def operand_count(call: AggregateCall) -> int:
    """A plain aggregate reads one operand; a program names its slot count in its second byte."""
    if call.kind != "expression":
        return 1
    if len(call.constant) < 2:
        raise InternalError("an expression aggregate's program is too short")
    return call.constant[1]


def stage_layout(
    calls: Sequence[AggregateCall], maps: Sequence[Sequence[int]], slots: int
) -> bytes:
    """The layout of enclave.h 5d: header, then per output its codes, constant and slot map.

    >>> stage_layout([AggregateCall(1, 2, 4, 12, decimal_scale=2)], [[0]], 1).hex()
    '0101010c04020002000000'
    """
    layout = bytearray([_STAGE_LAYOUT_VERSION, slots, len(calls)])
    for call, slot_map in zip(calls, maps, strict=True):
        constant = call.constant if call.kind == "expression" else b""
        layout += bytes([call.operator, call.type_code])
        layout += call.cek_id.to_bytes(2, "little") + bytes([call.decimal_scale])
        layout += len(constant).to_bytes(2, "little") + constant + bytes(slot_map)
    return bytes(layout)


def _finish_stage(
    table: pa.Table, calls: Sequence[AggregateCall], gateway: Any, query_id: int
) -> tuple[pa.Table, set[int]]:
    """The SUM, AVG, SUM_EXPR and AVG_EXPR calls of a stage through the enclave's stage call:
    each distinct operand (a shared struct field, a plain list, an expression's own struct
    field) becomes one slot, decrypted once. Returns the table and the ids of the calls done.

    Calls whose lists do not have the same lengths per row as the first (no common group ids)
    are left to the one-call-per-column path, as are all calls when the gateway has no stage
    call and no column is shared.
    """
    shared = _shared_readers(table)
    stage_call = getattr(gateway, "aggregate_stage", None)
    eligible = [
        call
        for call in calls
        if call.kind == "expression"
        or (call.kind == "aggregate" and call.operator in STAGE_OPERATORS)
        or (
            call.kind == "aggregate" and shared is not None and (call.result_column, 0) in shared[1]
        )
    ]
    if shared is not None:
        # A shared column's aggregates must finish from it: their own columns hold NULLs.
        eligible = [
            call
            for call in eligible
            if (call.result_column, 0) in shared[1] or stage_call is not None
        ]
    elif stage_call is None:
        return table, set()
    lists: dict[int, pa.Array] = {}
    sources: list[list[tuple[int, int | None]]] = []
    chosen: list[AggregateCall] = []
    lengths: Any = None
    for call in eligible:
        operands: list[tuple[int, int | None]]
        if shared is not None and (call.result_column, 0) in shared[1]:
            holder, readers = shared
            try:
                operands = [
                    (holder, readers[(call.result_column, k)]) for k in range(operand_count(call))
                ]
            except KeyError:
                raise InternalError("a shared aggregate column lacks an operand") from None
        elif call.kind == "expression":
            operands = [(call.result_column, k) for k in range(operand_count(call))]
        else:
            operands = [(call.result_column, None)]
        for column, _ in operands:
            if column not in lists:
                lists[column] = _list_column(table, column)
        own = pc.fill_null(pc.list_value_length(lists[operands[0][0]]), 0).to_numpy(
            zero_copy_only=False
        )
        if lengths is None:
            lengths = own
        elif len(own) != len(lengths) or not np.array_equal(own, lengths):
            if (call.result_column, 0) in (shared[1] if shared is not None else {}):
                raise InternalError("a shared aggregate column is not aligned with its rows")
            continue
        sources.append(operands)
        chosen.append(call)
    if not chosen:
        return table, set()
    group_count = len(lengths)
    group_ids = pa.array(np.repeat(np.arange(group_count, dtype=np.int64), lengths))
    flat: dict[int, list[pa.Array]] = {}
    for column, lists_array in lists.items():
        rows = pc.list_flatten(lists_array)
        flat[column] = rows.flatten() if pa.types.is_struct(rows.type) else [rows]
    results: dict[int, Any] = {}
    for batch in _stage_batches(sources):
        keys = list(dict.fromkeys(operand for index in batch for operand in sources[index]))
        slot_of = {key: position for position, key in enumerate(keys)}
        slots = [normalized_slot(flat[column][field or 0]) for column, field in keys]
        batch_calls = [chosen[index] for index in batch]
        maps = [[slot_of[operand] for operand in sources[index]] for index in batch]
        if stage_call is not None:
            layout = stage_layout(batch_calls, maps, len(keys))
            cells = stage_call(query_id, layout, slots, group_ids, group_count, len(batch))
        else:
            cells = [
                _one_from_slots(
                    call, [slots[k] for k in slot_map], (group_ids, group_count), gateway, query_id
                )
                for call, slot_map in zip(batch_calls, maps, strict=True)
            ]
        for index, result in zip(batch, cells, strict=True):
            results[index] = result
    for index, call in enumerate(chosen):
        name = table.column_names[call.result_column]
        table = table.set_column(call.result_column, name, results[index])
    if shared is not None and shared[0] not in {call.result_column for call in chosen}:
        raise InternalError("a shared aggregate column has no aggregate of its own")
    return table, {id(call) for call in chosen}


def _stage_batches(sources: Sequence[Sequence[tuple[int, int | None]]]) -> list[list[int]]:
    """Calls (by index) in batches the enclave takes in one call: at most 32 outputs and 16
    distinct operands each, in order.

    >>> _stage_batches([[(1, None)], [(2, 0), (2, 1)], [(1, None)]])
    [[0, 1, 2]]
    """
    batches: list[list[int]] = []
    seen: set[tuple[int, int | None]] = set()
    for index, operands in enumerate(sources):
        wanted = seen | set(operands)
        if not batches or len(batches[-1]) == STAGE_MAX_OUTPUTS or len(wanted) > STAGE_MAX_SLOTS:
            batches.append([])
            wanted = set(operands)
        batches[-1].append(index)
        seen = wanted
    return batches


def _one_from_slots(
    call: AggregateCall,
    slots: list[pa.Array],
    group_ids: tuple[pa.Array, int],
    gateway: Any,
    query_id: int,
) -> Any:
    """One aggregate of a shared column through its own enclave call (a gateway without the
    stage call); group_ids is (the ids, the group count)."""
    ids, group_count = group_ids
    if call.kind == "expression":
        return gateway.aggregate_expression(
            query_id,
            call.cek_id,
            call.type_code,
            call.operator,
            call.constant,
            slots,
            ids,
            group_count,
        )
    return gateway.aggregate(
        query_id,
        call.cek_id,
        call.type_code,
        call.operator,
        slots[0],
        ids,
        group_count,
        call.decimal_scale,
    )


def finish_aggregates(
    table: pa.Table, calls: Sequence[AggregateCall], gateway: Any, query_id: int
) -> pa.Table:
    """Replace each aggregate's LIST column by the enclave's one result cell per row, and each
    ORDER BY column's cells by the enclave's ranks.

    Every row is one group: its list's cells get the row number as group id, NULL cells are
    skipped by the enclave, and an empty or NULL list gives NULL (0 for COUNT_DISTINCT). Every
    SUM and AVG (of a column or an expression, shared column or not) goes to the enclave in one
    stage call when the gateway has one; the other aggregates get one call per column.

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
    # A top-k call drops the rows outside the first k first, so the other calls see fewer cells.
    for call in calls:
        if call.kind == "top_k":
            table = _keep_top_k(table, call, gateway, query_id)
    # Every SUM and AVG (of a column or of an expression) in one enclave call that decrypts each
    # operand column once; the other calls, and those after them on the same column, follow.
    table, done = _finish_stage(table, calls, gateway, query_id)
    calls = [call for call in calls if id(call) not in done]
    # Calls on one column run in order (an ORDER BY over an aggregate ranks the aggregate's
    # result cells); calls on different columns are independent, and the native calls release
    # the GIL, so on a large result they run side by side (Q1: seven aggregates over ~600k rows
    # each, ~1.2 s of enclave work on one core).
    chains: dict[int, list[AggregateCall]] = {}
    for call in calls:
        if call.kind != "top_k":
            chains.setdefault(call.result_column, []).append(call)
    jobs = [(table.column(index), chain) for index, chain in chains.items()]

    def run(job: tuple[Any, list[AggregateCall]]) -> Any:
        column, chain = job
        for call in chain:
            column = _finish_one(column, call, gateway, query_id)
        return column

    if len(jobs) > 1 and sum(column.nbytes for column, _ in jobs) >= _PARALLEL_BYTES:
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1, 8)) as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(job) for job in jobs]
    for index, result in zip(chains, results, strict=True):
        table = table.set_column(index, table.column_names[index], result)
    return table

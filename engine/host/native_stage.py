"""Native stage aggregates: a stage's SUM and AVG LISTs become one ``__ee_stage_k`` aggregate.

With the native DuckDB extension loaded, the host rewrites the outermost SELECT's LIST items of
the stage-one SUM, AVG, SUM_EXPR and AVG_EXPR calls into one aggregate
``__ee_stage_k(slot_1 .. slot_k, query_id, layout_ref)`` (native/duckdb_extension/
enclavesql_stage.inc): DuckDB groups and runs it in parallel, and the enclave keeps each
group's partial sums sealed, so no LIST of cells is built. Afterwards output o of its
LIST(BLOB) goes to call o's column, the same cells the LIST path's stage call returns.
It must not decrypt or touch anything but those items; a shape it does not recognize (a
UNION, a subquery's aggregate, too many slots) keeps the LIST path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp, parse_one

from engine.host.enclave_execution import (
    STAGE_MAX_OUTPUTS,
    STAGE_MAX_SLOTS,
    STAGE_OPERATORS,
    operand_count,
    stage_layout,
)
from engine.host.enclave_udfs import constant_ref
from engine.sql.plan import AggregateCall
from engine.sql.rewrite_enclave_aggregates import parse_shared_slot_name

__all__ = ["NativeStage", "native_stage"]

# Set ENCLAVESQL_NATIVE_AGGREGATES=0 to keep the LIST path while the native predicates run.
_SWITCH = "ENCLAVESQL_NATIVE_AGGREGATES"
# Stand-ins for the per-query numbers in the cached SQL text.
_QUERY_MARK = "9187201950435737471"
_REF_MARK = "9187201950435737470"
_CACHE_LIMIT = 256
_UBIGINT = exp.DataType.build("UBIGINT", dialect="duckdb")
_cache: dict[tuple[str, tuple[AggregateCall, ...]], NativeStage | None] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class NativeStage:
    """The rewritten stage-one SQL (with markers) and how to spread its result."""

    template: str
    layout: bytes
    holder: int  # the column that holds the LIST(BLOB) of outputs
    calls: tuple[AggregateCall, ...]  # in output order

    def sql(self, query_id: int) -> str:
        """The statement for one query: its id and the layout's constant ref filled in."""
        ref = constant_ref(self.layout)
        return self.template.replace(_QUERY_MARK, str(query_id)).replace(_REF_MARK, str(ref))

    def spread(self, table: pa.Table) -> pa.Table:
        """Output o of the holder's lists into call o's column (a NULL list: NULL cells)."""
        column = table.column(self.holder)
        lists = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        if isinstance(lists, pa.ChunkedArray):
            lists = pa.array([], column.type)
        cells = [
            pc.list_element(lists, o).cast(pa.binary()) if len(lists) else pa.array([], pa.binary())
            for o in range(len(self.calls))
        ]
        for call, values in zip(self.calls, cells, strict=True):
            table = table.set_column(
                call.result_column, table.column_names[call.result_column], values
            )
        return table


def native_stage(sql: str, calls: Sequence[AggregateCall]) -> NativeStage | None:
    """The native form of ``sql``'s stage-one SUM and AVG calls, or None to keep LISTs."""
    if os.environ.get(_SWITCH, "1") == "0":
        return None
    key = (sql, tuple(calls))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    found = _build(sql, calls)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = found
    return found


def _unaliased(item: exp.Expr) -> exp.Expr:
    return item.this if isinstance(item, exp.Alias) else item


def _list_argument(item: exp.Expr) -> exp.Expr | None:
    """x of an item ``LIST(x) AS name`` (DuckDB's LIST reads back as ARRAY_AGG)."""
    node = _unaliased(item)
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Expr):
        return node.this
    return None


def _struct_fields(argument: exp.Expr | None) -> list[tuple[str, exp.Expr]] | None:
    """The (name, value) fields of ``STRUCT_PACK(name := value, ...)``."""
    if not isinstance(argument, exp.Struct):
        return None
    fields = []
    for field in argument.expressions:
        if not isinstance(field, exp.PropertyEQ):
            return None
        fields.append((field.this.name, field.expression))
    return fields


def _plain_slots(call: AggregateCall) -> set[int]:
    """A program's plain slots (source byte 2 in its slot table, enclave.h 5b)."""
    if call.kind != "expression":
        return set()
    return {k for k in range(operand_count(call)) if call.constant[2 + 5 * k] == 2}


def _build(sql: str, calls: Sequence[AggregateCall]) -> NativeStage | None:
    chosen = [
        call
        for call in calls
        if call.kind == "expression"
        or (call.kind == "aggregate" and call.operator in STAGE_OPERATORS)
    ]
    if not chosen or len(chosen) > STAGE_MAX_OUTPUTS:
        return None
    tree = parse_one(sql, read="duckdb")
    if not isinstance(tree, exp.Select):
        return None
    items = list(tree.expressions)
    shared: tuple[int, dict[tuple[int, int], exp.Expr]] | None = None
    for index, item in enumerate(items):
        fields = _struct_fields(_list_argument(item))
        parsed = [parse_shared_slot_name(name) for name, _ in fields or []]
        if fields and all(readers is not None for readers in parsed):
            shared = (
                index,
                {
                    reader: value
                    for (_, value), readers in zip(fields, parsed, strict=True)
                    for reader in readers or ()
                },
            )
            break
    slots: dict[str, exp.Expr] = {}  # by SQL text: one slot per distinct operand
    maps: list[list[int]] = []
    for call in chosen:
        column = call.result_column
        if column >= len(items):
            return None
        count = operand_count(call)
        if shared is not None and (column, 0) in shared[1]:
            operands = [shared[1].get((column, k)) for k in range(count)]
        elif call.kind == "expression":
            fields = _struct_fields(_list_argument(items[column]))
            if fields is None or len(fields) != count:
                return None
            operands = [value for _, value in fields]
        else:
            operands = [_list_argument(items[column])]
        plain = _plain_slots(call)
        slot_map = []
        for k, operand in enumerate(operands):
            if operand is None:
                return None
            value = operand.copy()
            if k in plain:
                value = exp.Anonymous(this="__ee_plain", expressions=[value])
            text = value.sql("duckdb")
            slots.setdefault(text, value)
            slot_map.append(list(slots).index(text))
        maps.append(slot_map)
    if len(slots) > STAGE_MAX_SLOTS:
        return None
    layout = stage_layout(chosen, maps, len(slots))
    holder = shared[0] if shared is not None else chosen[0].result_column
    stage = exp.Anonymous(
        this=f"__ee_stage_{len(slots)}",
        expressions=[
            *slots.values(),
            exp.cast(exp.Literal.number(_QUERY_MARK), _UBIGINT),
            exp.cast(exp.Literal.number(_REF_MARK), _UBIGINT),
        ],
    )
    replaced = {holder} | {call.result_column for call in chosen}
    if not all(isinstance(items[index], exp.Alias) for index in replaced):
        return None  # the output names must stay as they are
    if any(items[index].find(exp.Placeholder) is not None for index in replaced):
        return None  # moving a ? marker would change which value binds to it
    for index in replaced:
        value = stage if index == holder else exp.cast(exp.null(), "BLOB")
        items[index].this.replace(value)
    return NativeStage(tree.sql("duckdb"), layout, holder, tuple(chosen))

"""engine.host.enclave_execution: plaintext slots of expression aggregates and finish_aggregates.

normalized_slot is checked against the client's reference normalization (engine.normalization);
finish_aggregates against sums computed here from the source numbers, through a fake gateway
that decodes 8-byte little-endian "cells", on both its one-thread and its threaded path.
"""

from __future__ import annotations

import struct
import threading
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DataError
from engine.host import enclave_execution
from engine.host.enclave_execution import finish_aggregates, normalized_slot
from engine.normalization import normalize
from engine.sql.plan import AggregateCall
from engine.sql.rewrite_enclave_aggregates import shared_slot_name

_MAX_128 = 10**38 - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=40))
def test_int64_slot_matches_reference(values: list[int | None]) -> None:
    assert normalized_slot(pa.array(values, pa.int64())) == normalize(values, "BIGINT")


@pytest.mark.parametrize("scale", [0, 2, 6, 18, 38])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_decimal_slot_matches_reference(scale: int, data: st.DataObject) -> None:
    unscaled = data.draw(
        st.lists(st.one_of(st.none(), st.integers(-_MAX_128, _MAX_128)), max_size=30)
    )
    values = [None if v is None else Decimal(f"{v}E-{scale}") for v in unscaled]
    array = pa.array(values, pa.decimal128(38, scale))
    assert normalized_slot(array) == normalize(values, f"DECIMAL(38,{scale})")


def test_decimal_slot_of_a_slice_reads_its_own_rows() -> None:
    values = [Decimal("-1.25"), None, Decimal("3.50"), Decimal("-0.01"), Decimal("9.99")]
    array = pa.array(values, pa.decimal128(38, 2)).slice(1, 3)
    assert normalized_slot(array) == normalize(values[1:4], "DECIMAL(38,2)")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=40))
def test_double_slot_holds_the_same_numbers(values: list[float | None]) -> None:
    # The reference also folds -0.0 into +0.0 (for equality); arithmetic needs the number only.
    slot = normalized_slot(pa.array(values, pa.float64())).to_pylist()
    reference = normalize(values, "DOUBLE").to_pylist()
    assert [v is None for v in slot] == [v is None for v in reference]
    for mine, theirs in zip(slot, reference, strict=True):
        if mine is not None:
            assert struct.unpack("<d", mine) == struct.unpack("<d", theirs)


def test_binary_slot_is_passed_through() -> None:
    cells = pa.array([b"\x01\x02", None], pa.large_binary())
    assert normalized_slot(cells).to_pylist() == [b"\x01\x02", None]


def _cells(numbers: np.ndarray) -> pa.Array:
    data = np.ascontiguousarray(numbers, dtype="<i8")
    fixed = pa.Array.from_buffers(pa.binary(8), len(data), [None, pa.py_buffer(data.tobytes())])
    return fixed.cast(pa.binary())


def _lists(numbers: np.ndarray, groups: int) -> pa.Array:
    bounds = np.linspace(0, len(numbers), groups + 1).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(bounds), _cells(numbers))


def _decode(cells: pa.Array) -> np.ndarray:
    return np.array([struct.unpack("<q", cell)[0] for cell in cells.to_pylist()], dtype=np.int64)


class _Gateway:
    """SUM of 8-byte LE integers per group, and an expression's SUM(slot0 * slot1); it notes
    the thread of every call, can make its first two calls meet at a barrier, and can fail on
    one operator."""

    def __init__(self, barrier: threading.Barrier | None = None, fail_operator: int | None = None):
        self.barrier = barrier
        self.fail_operator = fail_operator
        self.threads: list[int] = []
        self._lock = threading.Lock()

    def _enter(self, operator: int) -> None:
        with self._lock:
            self.threads.append(threading.get_ident())
            meet = len(self.threads) <= 2
        if self.barrier is not None and meet:
            self.barrier.wait()  # breaks (and the test fails) unless two calls run at once
        if operator == self.fail_operator:
            raise DataError("an aggregate overflowed; use a wider type")

    def aggregate(self, q: int, cek: int, type_code: int, op: int, cells: Any, ids: Any,
                  count: int, scale: int = 0) -> pa.Array:  # fmt: skip
        self._enter(op)
        sums = np.bincount(ids.to_numpy(), weights=_decode(cells), minlength=count)
        return _cells(sums.astype(np.int64))

    def aggregate_expression(self, q: int, cek: int, type_code: int, op: int, program: bytes,
                             slots: Any, ids: Any, count: int) -> pa.Array:  # fmt: skip
        self._enter(op)
        product = _decode(slots[0]) * _decode(slots[1])
        return _cells(
            np.bincount(ids.to_numpy(), weights=product, minlength=count).astype(np.int64)
        )

    def rank(self, q: int, cek: int, type_code: int, cells: Any) -> pa.Array:
        self._enter(-1)
        numbers = _decode(cells).tolist()
        order = sorted(set(numbers))
        return pa.array([order.index(n) for n in numbers], pa.int64())


def _stage(rows: int, groups: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    a = rng.integers(-1000, 1000, rows)
    b = rng.integers(0, 50, rows)
    bounds = np.linspace(0, rows, groups + 1).astype(np.int32)
    pairs = pa.StructArray.from_arrays([_cells(a), _cells(b)], names=["s0", "s1"])
    table = pa.table(
        {
            "g": pa.array(range(groups)),
            "sum_a": _lists(a, groups),
            "sum_b": _lists(b, groups),
            "sum_ab": pa.ListArray.from_arrays(pa.array(bounds), pairs),
        }
    )
    return table, a, b


def _expected(values: np.ndarray, groups: int) -> list[int]:
    bounds = np.linspace(0, len(values), groups + 1).astype(np.int64)
    return [int(values[lo:hi].sum()) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


_CALLS = [
    AggregateCall(1, 1, 1, 1),
    AggregateCall(2, 1, 1, 2),
    AggregateCall(3, 1, 1, 3, kind="expression", constant=b"p"),
]


def test_large_stage_runs_the_enclave_calls_side_by_side(monkeypatch: Any) -> None:
    monkeypatch.setattr(enclave_execution.os, "cpu_count", lambda: 2)
    table, a, b = _stage(50_000, 3)
    assert sum(table.column(c.result_column).nbytes for c in _CALLS) >= 1 << 20
    gateway = _Gateway(threading.Barrier(2, timeout=10))
    done = finish_aggregates(table, _CALLS, gateway, 5)
    assert _decode(done.column("sum_a").combine_chunks()).tolist() == _expected(a, 3)
    assert _decode(done.column("sum_b").combine_chunks()).tolist() == _expected(b, 3)
    assert _decode(done.column("sum_ab").combine_chunks()).tolist() == _expected(a * b, 3)
    assert done.column("g").to_pylist() == [0, 1, 2]
    assert threading.get_ident() not in gateway.threads


def test_small_stage_stays_on_the_calling_thread() -> None:
    table, a, b = _stage(300, 2)
    gateway = _Gateway()
    done = finish_aggregates(table, _CALLS, gateway, 5)
    assert _decode(done.column("sum_ab").combine_chunks()).tolist() == _expected(a * b, 2)
    assert _decode(done.column("sum_b").combine_chunks()).tolist() == _expected(b, 2)
    assert set(gateway.threads) == {threading.get_ident()}


@pytest.mark.parametrize("rows", [300, 50_000])
def test_a_failing_call_raises_its_error(rows: int, monkeypatch: Any) -> None:
    monkeypatch.setattr(enclave_execution.os, "cpu_count", lambda: 2)
    table, _, _ = _stage(rows, 2)
    with pytest.raises(DataError, match="overflowed"):
        finish_aggregates(table, _CALLS, _Gateway(fail_operator=2), 5)


@pytest.mark.parametrize("rows", [300, 50_000])
def test_an_order_by_over_an_aggregate_ranks_its_result(rows: int, monkeypatch: Any) -> None:
    # ORDER BY SUM(a): the rank call on the aggregate's column reads the sums, not the lists.
    monkeypatch.setattr(enclave_execution.os, "cpu_count", lambda: 2)
    table, a, b = _stage(rows, 3)
    calls = [*_CALLS, AggregateCall(1, 1, 1, 9, kind="rank")]
    done = finish_aggregates(table, calls, _Gateway(), 5)
    sums = _expected(a, 3)
    assert done.column("sum_a").to_pylist() == [sorted(sums).index(v) for v in sums]
    assert _decode(done.column("sum_b").combine_chunks()).tolist() == _expected(b, 3)


# ---- the stage call: every SUM and AVG of a stage at once ------------------------------------


class _StageGateway(_Gateway):
    """_Gateway plus the stage call: it reads the layout itself (enclave.h 5d) and answers each
    output as SUM (op 12) of its slot or SUM_EXPR (op 19) of the product of its two slots."""

    def __init__(self) -> None:
        super().__init__()
        self.stage_calls: list[tuple[bytes, int]] = []

    def aggregate_stage(self, q: int, layout: bytes, slots: Any, ids: Any, count: int,
                        outputs: int) -> list[pa.Array]:  # fmt: skip
        self.stage_calls.append((layout, len(slots)))
        assert layout[0] == 1 and layout[1] == len(slots) and layout[2] == outputs
        at, results = 3, []
        for _ in range(outputs):
            op, constant_len = layout[at], int.from_bytes(layout[at + 5 : at + 7], "little")
            operands = 1 if op == 12 else layout[at + 7 + 1]  # a program's slot count
            at += 7 + constant_len
            slot_map = list(layout[at : at + operands])
            at += operands
            values = _decode(slots[slot_map[0]])
            if op == 19:
                values = values * _decode(slots[slot_map[1]])
            sums = np.bincount(ids.to_numpy(), weights=values, minlength=count)
            results.append(_cells(sums.astype(np.int64)))
        assert at == len(layout)
        return results


def _program(slot_count: int) -> bytes:
    """Enough of a program for the host: version and slot count (the enclave parses the rest)."""
    return bytes([1, slot_count])


def _shared_stage(rows: int, groups: int) -> tuple[pa.Table, list[AggregateCall], dict]:
    """SUM(a) (column 1) and SUM(a * b) (column 3) share column 1; SUM(c) (column 2) has its own
    list; column 3 is the placeholder."""
    rng = np.random.default_rng(11)
    a, b, c = (rng.integers(-500, 500, rows) for _ in range(3))
    bounds = pa.array(np.linspace(0, rows, groups + 1).astype(np.int32))
    names = [shared_slot_name([(1, 0), (3, 0)]), shared_slot_name([(3, 1)])]
    shared = pa.StructArray.from_arrays([_cells(a), _cells(b)], names=names)
    table = pa.table(
        {
            "g": pa.array(range(groups)),
            "sum_a": pa.ListArray.from_arrays(bounds, shared),
            "sum_c": _lists(c, groups),
            "sum_ab": pa.nulls(groups, pa.binary()),
        }
    )
    calls = [
        AggregateCall(1, 1, 1, 12),
        AggregateCall(2, 1, 1, 12),
        AggregateCall(3, 1, 4, 19, kind="expression", constant=_program(2)),
        AggregateCall(1, 1, 1, 10, kind="rank"),  # ORDER BY SUM(a): ranks the sums afterwards
    ]
    return table, calls, {"a": a, "b": b, "c": c}


@pytest.mark.parametrize("rows", [40, 5_000])
def test_a_stage_is_one_call_with_each_operand_once(rows: int) -> None:
    table, calls, values = _shared_stage(rows, 3)
    gateway = _StageGateway()
    done = finish_aggregates(table, calls, gateway, 5)
    # One call: a and b from the shared column, c from its own list; three outputs.
    assert [(layout[:3], slots) for layout, slots in gateway.stage_calls] == [(b"\x01\x03\x03", 3)]
    sums = _expected(values["a"], 3)
    assert done.column("sum_a").to_pylist() == [sorted(sums).index(v) for v in sums]
    assert _decode(done.column("sum_c").combine_chunks()).tolist() == _expected(values["c"], 3)
    product = values["a"] * values["b"]
    assert _decode(done.column("sum_ab").combine_chunks()).tolist() == _expected(product, 3)


def test_a_shared_column_without_the_stage_call_finishes_each_aggregate_from_it() -> None:
    table, calls, values = _shared_stage(40, 2)
    done = finish_aggregates(table, calls[:3], _Gateway(), 5)
    assert _decode(done.column("sum_a").combine_chunks()).tolist() == _expected(values["a"], 2)
    assert _decode(done.column("sum_c").combine_chunks()).tolist() == _expected(values["c"], 2)
    product = values["a"] * values["b"]
    assert _decode(done.column("sum_ab").combine_chunks()).tolist() == _expected(product, 2)


def test_lists_of_other_lengths_keep_their_own_call() -> None:
    # Column 2's lists do not line up with column 1's: no common group ids, so its own call.
    numbers = np.arange(12)
    table = pa.table(
        {
            "s1": _lists(numbers, 3),
            "s2": pa.ListArray.from_arrays(pa.array([0, 1, 2, 12], pa.int32()), _cells(numbers)),
        }
    )
    gateway = _StageGateway()
    calls = [AggregateCall(0, 1, 1, 12), AggregateCall(1, 1, 1, 12)]
    done = finish_aggregates(table, calls, gateway, 5)
    assert len(gateway.stage_calls) == 1 and gateway.stage_calls[0][0][:3] == b"\x01\x01\x01"
    assert _decode(done.column("s1").combine_chunks()).tolist() == _expected(numbers, 3)
    assert _decode(done.column("s2").combine_chunks()).tolist() == [0, 1, int(numbers[2:].sum())]


def test_more_than_sixteen_operands_or_thirty_two_outputs_take_several_calls() -> None:
    rng = np.random.default_rng(3)
    columns = {f"s{i}": rng.integers(-9, 9, 30) for i in range(40)}
    table = pa.table({name: _lists(values, 2) for name, values in columns.items()})
    gateway = _StageGateway()
    calls = [AggregateCall(i, 1, 1, 12) for i in range(40)]
    done = finish_aggregates(table, calls, gateway, 5)
    # 40 distinct operands: batches of at most 16.
    assert [slots for _, slots in gateway.stage_calls] == [16, 16, 8]
    for name, values in columns.items():
        assert _decode(done.column(name).combine_chunks()).tolist() == _expected(values, 2)
    # 40 outputs over one shared operand: batches of at most 32 outputs.
    names = [shared_slot_name([(i, 0) for i in range(40)])]
    shared = pa.StructArray.from_arrays([_cells(columns["s0"])], names=names)
    holder = pa.ListArray.from_arrays(pa.array([0, 15, 30], pa.int32()), shared)
    table = pa.table({f"c{i}": holder if i == 0 else pa.nulls(2, pa.binary()) for i in range(40)})
    gateway = _StageGateway()
    done = finish_aggregates(table, calls, gateway, 5)
    assert [layout[2] for layout, _ in gateway.stage_calls] == [32, 8]
    assert all(
        _decode(done.column(i).combine_chunks()).tolist() == _expected(columns["s0"], 2)
        for i in range(40)
    )


def test_stage_operator_codes_match_the_header() -> None:
    binding = pytest.importorskip("enclave.binding")
    assert enclave_execution.STAGE_OPERATORS == (binding.OP_SUM, binding.OP_AVG)
    lib = binding._lib
    assert enclave_execution.STAGE_MAX_OUTPUTS == lib.EE_STAGE_MAX_OUTPUTS
    assert enclave_execution.STAGE_MAX_SLOTS == lib.EE_EXPR_MAX_SLOTS
    assert enclave_execution._STAGE_LAYOUT_VERSION == lib.EE_STAGE_LAYOUT_VERSION

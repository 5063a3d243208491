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

"""enclave_filter (one enclave pass per conjunct over the rows still in play) against DuckDB.

Random conjunctions of comparisons, BETWEEN and IN over encrypted BIGINT columns with NULLs are
evaluated by the enclave and by DuckDB's own three-valued AND on the plaintext; tampering and
authorization are checked per conjunct. The SQL path over it is in tests/e2e/test_enclave_filter.py.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave import binding
from engine.client.codec import encrypt_column
from engine.errors import CellAuthenticationError, DatabaseError, OperationalError
from tests.support.enclave_harness import Client

CEK = os.urandom(32)
INT = binding.TYPE_INT64
SQL_OPS = {
    binding.OP_EQ: "=",
    binding.OP_NE: "<>",
    binding.OP_LT: "<",
    binding.OP_LE: "<=",
    binding.OP_GT: ">",
    binding.OP_GE: ">=",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    session = Client(tmp_path_factory.mktemp("platform"))
    yield session
    session.close()


def cells(values: list[int | None]) -> pa.Array:
    return encrypt_column(values, CEK, "RANDOMIZED", "BIGINT")


def cell(value: int) -> bytes:
    result = cells([value])[0].as_py()
    assert isinstance(result, bytes)
    return result


def prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# A predicate: (operator, constants) over column `index`; its SQL text over v<index>.
Predicate = tuple[int, int, tuple[int, ...]]


def constant_blob(operator: int, constants: tuple[int, ...]) -> bytes:
    if operator == binding.OP_BETWEEN:
        return prefixed(cell(constants[0]), cell(constants[1]))
    if operator == binding.OP_IN:
        return struct.pack("<I", len(constants)) + prefixed(*(cell(c) for c in constants))
    return cell(constants[0])


def sql_of(predicate: Predicate) -> str:
    index, operator, constants = predicate
    column = f"v{index}"
    if operator == binding.OP_BETWEEN:
        return f"({column} BETWEEN {constants[0]} AND {constants[1]})"
    if operator == binding.OP_IN:
        return f"({column} IN ({', '.join(map(str, constants))}))"
    return f"({column} {SQL_OPS[operator]} {constants[0]})"


_VALUE = st.integers(-3, 3)
_PREDICATE = st.one_of(
    st.tuples(st.sampled_from(sorted(SQL_OPS)), st.tuples(_VALUE)),
    st.tuples(st.just(binding.OP_BETWEEN), st.tuples(_VALUE, _VALUE)),
    st.tuples(st.just(binding.OP_IN), st.lists(_VALUE, min_size=1, max_size=3).map(tuple)),
)


def run_filter(query: int, blobs: list[tuple[int, bytes]], columns: list[pa.Array]) -> Any:
    predicates = [(1, INT, operator, blob) for operator, blob in blobs]
    return binding.enclave_filter(query, predicates, columns)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(st.tuples(*(st.one_of(st.none(), _VALUE) for _ in range(3))), max_size=20),
    chosen=st.lists(st.tuples(st.integers(0, 2), _PREDICATE), min_size=1, max_size=4),
)
def test_conjunctions_follow_three_valued_and(
    client: Client, rows: list[tuple[int | None, ...]], chosen: list[tuple[int, Any]]
) -> None:
    predicates: list[Predicate] = [(index, op, consts) for index, (op, consts) in chosen]
    columns = [cells([row[i] for row in rows]) for i in range(3)]
    blobs = [(op, constant_blob(op, consts)) for _, op, consts in predicates]
    grants = [(1, op, INT, blob) for op, blob in blobs]
    query = client.begin("AND", [(1, CEK)], grants)
    try:
        got = run_filter(query, blobs, [columns[index] for index, _, _ in predicates])
    finally:
        binding.end_query(query)
    oracle = duckdb.connect()
    oracle.execute("CREATE TABLE t (i INTEGER, v0 BIGINT, v1 BIGINT, v2 BIGINT)")
    if rows:
        oracle.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)]
        )
    text = " AND ".join(sql_of(p) for p in predicates)
    want = [r[0] for r in oracle.execute(f"SELECT {text} FROM t ORDER BY i").fetchall()]
    assert got.to_pylist() == want


def test_large_sliced_columns_span_chunks(client: Client) -> None:
    rng = np.random.default_rng(3)
    count = 5000
    first, second = rng.integers(-20, 20, count), rng.integers(-20, 20, count)
    first_nulls, second_nulls = rng.random(count) < 0.1, rng.random(count) < 0.1
    left = encrypt_column(pa.array(first, mask=first_nulls), CEK, "RANDOMIZED", "BIGINT")
    right = encrypt_column(pa.array(second, mask=second_nulls), CEK, "RANDOMIZED", "BIGINT")
    lt, ge = cell(5), cell(-3)
    query = client.begin(
        "BIG", [(1, CEK)], [(1, binding.OP_LT, INT, lt), (1, binding.OP_GE, INT, ge)]
    )
    try:
        blobs = [(binding.OP_LT, lt), (binding.OP_GE, ge)]
        got = run_filter(query, blobs, [left, right])
        sliced = run_filter(query, blobs, [left.slice(1001, 2500), right.slice(1001, 2500)])
    finally:
        binding.end_query(query)
    a = pa.array(first < 5, mask=first_nulls)
    b = pa.array(second >= -3, mask=second_nulls)
    want = pa.compute.and_kleene(a, b)
    assert got.equals(want)
    assert sliced.equals(want.slice(1001, 2500))


def tamper(column: pa.Array, row: int) -> pa.Array:
    values = column.to_pylist()
    bad = bytearray(values[row])
    bad[-1] ^= 1
    values[row] = bytes(bad)
    return pa.array(values, pa.binary())


def test_a_tampered_cell_in_a_live_row_of_a_later_conjunct_is_refused(client: Client) -> None:
    first, second = cells([1, 9, 1]), tamper(cells([2, 2, 2]), 2)
    eq, lt = cell(1), cell(5)
    grants = [(1, binding.OP_EQ, INT, eq), (1, binding.OP_LT, INT, lt)]
    query = client.begin("TAMPER", [(1, CEK)], grants)
    try:
        with pytest.raises(CellAuthenticationError) as raised:
            run_filter(query, [(binding.OP_EQ, eq), (binding.OP_LT, lt)], [first, second])
        assert isinstance(raised.value, DatabaseError)  # not IntegrityError: see engine.errors
        # Row 2's tampered cell sits behind a FALSE first conjunct here: it is never read, so it
        # cannot change the answer (as SQL Server's short-circuit would skip it too).
        first_false = cells([1, 9, 9])
        got = run_filter(query, [(binding.OP_EQ, eq), (binding.OP_LT, lt)], [first_false, second])
        assert got.to_pylist() == [True, False, False]
        # ... but a NULL first conjunct does not make the row FALSE, so the cell is checked.
        first_null = cells([1, 9, None])
        with pytest.raises(CellAuthenticationError):
            run_filter(query, [(binding.OP_EQ, eq), (binding.OP_LT, lt)], [first_null, second])
    finally:
        binding.end_query(query)


def test_every_conjunct_needs_its_own_grant(client: Client) -> None:
    eq, lt = cell(1), cell(5)
    query = client.begin("GRANTS", [(1, CEK)], [(1, binding.OP_EQ, INT, eq)])
    try:
        # Even when the first conjunct is FALSE on every row, the second is checked first.
        with pytest.raises(OperationalError, match="did not authorize"):
            run_filter(
                query, [(binding.OP_EQ, eq), (binding.OP_LT, lt)], [cells([7, 8]), cells([1, 2])]
            )
    finally:
        binding.end_query(query)


def test_columns_of_different_lengths_are_refused(client: Client) -> None:
    eq = cell(1)
    query = client.begin("LENGTHS", [(1, CEK)], [(1, binding.OP_EQ, INT, eq)])
    try:
        with pytest.raises(binding.ProgrammingError):
            run_filter(query, [(binding.OP_EQ, eq)] * 2, [cells([1, 2]), cells([1])])
    finally:
        binding.end_query(query)

"""Enclave comparisons and LIKE on longer text and bytes against DuckDB on the plaintext.

The enclave orders byte strings eight bytes at a time and widens ASCII runs eight bytes at a
time for LIKE, so these values share long prefixes, mix ASCII runs with multi-byte characters
and bytes above 0x7f, and meet in AND chains (enclave_filter) next to NULLs. It tests answers
only; speed is measured in bench/enclave_ops.py.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave import binding
from engine.client.codec import encrypt_column
from tests.support.enclave_harness import COMPARISONS, Client

CEK = os.urandom(32)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces that make values share prefixes of 8 and 16 bytes and differ just after them, in the
# first byte of a word, in its last byte, or only in length.
_TEXT_PIECES = ["abcdefgh", "abcdefgi", "a", "b", "é", "ÿ", "\x7f", "😀", "\ue000"]
_BYTE_PIECES = [b"abcdefgh", b"abcdefg\x80", b"\x00", b"\x7f", b"\x80", b"\xff", b"a"]
_TEXT = st.lists(st.sampled_from(_TEXT_PIECES), max_size=5).map("".join)
_BYTES = st.lists(st.sampled_from(_BYTE_PIECES), max_size=5).map(b"".join)
# LIKE: long ASCII runs around the pattern's literals, and multi-byte characters inside them.
_LIKE_VALUE = st.lists(
    st.sampled_from(["abcdefgh", "xyzxyzxy", "ab", "a", "b", "é", "😀", "%"]), max_size=6
).map("".join)
_LIKE_PATTERN = st.lists(
    st.sampled_from(["%", "_", "a", "b", "ab", "gh", "é", "😀", "abcdefgh", "!%"]), max_size=6
).map("".join)
# (SQL type for the codec, DuckDB column type, enclave type code, values)
TEXT_KINDS = [
    ("VARCHAR", "VARCHAR", binding.TYPE_UTF8, _TEXT),
    ("NVARCHAR", "VARCHAR", binding.TYPE_UTF16LE, _TEXT),
    ("BLOB", "BLOB", binding.TYPE_BYTES, _BYTES),
]
LIKE_KINDS = [("VARCHAR", binding.TYPE_UTF8), ("NVARCHAR", binding.TYPE_UTF16LE)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    session = Client(tmp_path_factory.mktemp("platform"))
    yield session
    session.close()


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def column(sql_type: str, values: list[Any]) -> pa.Array:
    return encrypt_column(values, CEK, "RANDOMIZED", sql_type)


def cell(sql_type: str, value: Any) -> bytes:
    result = column(sql_type, [value])[0].as_py()
    assert isinstance(result, bytes)
    return result


def like_constant(sql_type: str, pattern: str) -> bytes:
    return struct.pack("<I", ord("!")) + cell(sql_type, pattern)


def load(oracle: duckdb.DuckDBPyConnection, duckdb_type: str, rows: list[tuple[Any, Any]]) -> None:
    oracle.execute("DROP TABLE IF EXISTS t")
    oracle.execute(f"CREATE TABLE t (i INTEGER, v {duckdb_type}, w {duckdb_type})")
    if rows:
        oracle.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])


def select(oracle: duckdb.DuckDBPyConnection, expression: str, parameters: list[Any]) -> list[Any]:
    query = f"SELECT {expression} FROM t ORDER BY i"
    return [row[0] for row in oracle.execute(query, parameters).fetchall()]


def answers(
    oracle: duckdb.DuckDBPyConnection,
    duckdb_type: str,
    rows: list[tuple[Any, Any]],
    expression: str,
    parameters: list[Any],
) -> list[Any]:
    load(oracle, duckdb_type, rows)
    return select(oracle, expression, parameters)


@pytest.mark.parametrize("kind", TEXT_KINDS, ids=[kind[0] for kind in TEXT_KINDS])
def test_long_shared_prefixes_compare_like_duckdb(
    kind: tuple[str, str, int, Any], client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    sql_type, duckdb_type, code, values = kind

    @SETTINGS
    @given(
        rows=st.lists(st.tuples(st.none() | values, st.none() | values), max_size=20),
        comparand=values,
    )
    def check(rows: list[tuple[Any, Any]], comparand: Any) -> None:
        left = column(sql_type, [row[0] for row in rows])
        right = column(sql_type, [row[1] for row in rows])
        constant = cell(sql_type, comparand)
        grants = [(1, op, code, constant) for op, _ in COMPARISONS]
        grants += [(1, op, code, b"") for op, _ in COMPARISONS]
        query = client.begin("TEXT", [(1, CEK)], grants)
        try:
            for op, sql in COMPARISONS:
                got = binding.enclave_compare(query, 1, code, op, constant, left)
                cast = f"CAST(? AS {duckdb_type})"
                want = answers(oracle, duckdb_type, rows, f"v {sql} {cast}", [comparand])
                assert got.to_pylist() == want, sql
                pair = binding.enclave_compare(query, 1, code, op, b"", left, right)
                assert pair.to_pylist() == answers(oracle, duckdb_type, rows, f"v {sql} w", [])
        finally:
            binding.end_query(query)

    check()


# Every value of two or three pieces against every pattern shape below: the cases where a
# skip after '%' could pass over the literal it looks for (at any offset, in any ASCII run).
_PIECES = ["abcdefgh", "xyzxyzxy", "ab", "b", "é", "😀"]
_GRID_VALUES = [a + b for a in _PIECES for b in _PIECES] + [
    a + b + c for a in _PIECES[:3] for b in _PIECES for c in _PIECES[2:]
]
_LITERALS = ["a", "b", "ab", "gh", "ya", "é", "😀", "hx"]
_GRID_PATTERNS = [
    shape.format(x, y)
    for x in _LITERALS
    for y in ["b", "h", "é"]
    for shape in ["%{0}", "{0}%", "%{0}%", "%{0}%{1}", "%{0}_{1}%", "_%{0}"]
]


@pytest.mark.parametrize("kind", LIKE_KINDS, ids=[kind[0] for kind in LIKE_KINDS])
def test_like_grid_matches_duckdb(
    kind: tuple[str, int], client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    sql_type, code = kind
    cells = column(sql_type, _GRID_VALUES)
    load(oracle, "VARCHAR", [(value, None) for value in _GRID_VALUES])
    patterns = sorted(set(_GRID_PATTERNS))
    constants = [like_constant(sql_type, pattern) for pattern in patterns]
    grants = [(1, binding.OP_LIKE, code, constant) for constant in constants]
    query = client.begin("LIKE", [(1, CEK)], grants)
    try:
        for pattern, constant in zip(patterns, constants, strict=True):
            got = binding.enclave_compare(query, 1, code, binding.OP_LIKE, constant, cells)
            want = select(oracle, "v LIKE ? ESCAPE '!'", [pattern])
            assert got.to_pylist() == want, pattern
    finally:
        binding.end_query(query)


@pytest.mark.parametrize("kind", LIKE_KINDS, ids=[kind[0] for kind in LIKE_KINDS])
def test_like_on_long_ascii_runs_matches_duckdb(
    kind: tuple[str, int], client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    sql_type, code = kind

    @SETTINGS
    @given(values=st.lists(st.none() | _LIKE_VALUE, max_size=16), pattern=_LIKE_PATTERN)
    def check(values: list[str | None], pattern: str) -> None:
        constant = like_constant(sql_type, pattern)
        query = client.begin("LIKE", [(1, CEK)], [(1, binding.OP_LIKE, code, constant)])
        try:
            got = binding.enclave_compare(
                query, 1, code, binding.OP_LIKE, constant, column(sql_type, values)
            )
        finally:
            binding.end_query(query)
        rows = [(value, None) for value in values]
        want = answers(oracle, "VARCHAR", rows, "v LIKE ? ESCAPE '!'", [pattern])
        assert got.to_pylist() == want

    check()


@SETTINGS
@given(
    rows=st.lists(st.tuples(st.none() | _LIKE_VALUE, st.none() | _TEXT), max_size=24),
    pattern=_LIKE_PATTERN,
    comparand=_TEXT,
    like_first=st.booleans(),
)
def test_text_conjunctions_follow_three_valued_and(
    client: Client,
    oracle: duckdb.DuckDBPyConnection,
    rows: list[tuple[Any, Any]],
    pattern: str,
    comparand: str,
    like_first: bool,
) -> None:
    code = binding.TYPE_UTF8
    like = (1, code, binding.OP_LIKE, like_constant("VARCHAR", pattern))
    below = (1, code, binding.OP_LT, cell("VARCHAR", comparand))
    columns = [
        column("VARCHAR", [row[0] for row in rows]),
        column("VARCHAR", [row[1] for row in rows]),
    ]
    predicates, ordered = [like, below], columns
    if not like_first:
        predicates, ordered = [below, like], columns[::-1]
    grants = [(1, op, type_code, blob) for _, type_code, op, blob in predicates]
    query = client.begin("AND", [(1, CEK)], grants)
    try:
        got = binding.enclave_filter(query, predicates, ordered)
    finally:
        binding.end_query(query)
    expression = "v LIKE ? ESCAPE '!' AND w < ?"
    assert got.to_pylist() == answers(oracle, "VARCHAR", rows, expression, [pattern, comparand])

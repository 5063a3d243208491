"""Differential property of order work on DETERMINISTIC columns under an enclave-enabled key:
random tables (ties and NULLs over INTEGER, DECIMAL, DATE and non-ASCII VARCHAR) with a random
direction, NULLS placement, LIMIT and OFFSET give plaintext DuckDB's rows for ORDER BY (ranks or
top-k), for a result grouped natively on the ciphertext and ordered by its key, for DISTINCT,
and for a range predicate the enclave evaluates. A unique key ends every sort."""

from __future__ import annotations

import datetime
import decimal
import itertools
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.client.enclave_session import InsecureEnclaveWarning
from tests.sql.differential import Differential
from tests.support.enclave_differential import enclave_differential

DETERMINISTIC_ENCLAVE = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_enclave, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
_VALUES = {
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "DECIMAL(9,3)": st.decimals(-999_999, 999_999, places=3, allow_nan=False),
    "DATE": st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)),
    "VARCHAR": st.text(alphabet="aAzé漢😀 _", max_size=4),
}
_tables = itertools.count()
# (type, rows of (g, v), the sort key with its direction, LIMIT/OFFSET text, a domain value)
_Case = tuple[str, list[tuple[object, ...]], str, str, object]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Differential]:
    with enclave_differential(tmp_path_factory, "deterministic_order_property") as differential:
        yield differential


@st.composite
def _cases(draw: st.DrawFn) -> _Case:
    type_name = draw(st.sampled_from(sorted(_VALUES)))
    # A small domain, so that groups, ties and ties at the LIMIT boundary are common.
    domain = draw(st.lists(_VALUES[type_name], min_size=1, max_size=4, unique=True))
    cell = st.one_of(st.none(), st.sampled_from(domain))
    rows: list[tuple[object, ...]] = draw(st.lists(st.tuples(st.integers(0, 2), cell), max_size=30))
    direction = draw(st.sampled_from(["", " ASC", " DESC"]))
    nulls = draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
    tail = ""
    limit = draw(st.one_of(st.none(), st.integers(0, 12)))
    if limit is not None:
        tail += f" LIMIT {limit}"
        offset = draw(st.one_of(st.none(), st.integers(0, 5)))
        tail += f" OFFSET {offset}" if offset is not None else ""
    probe = draw(st.sampled_from(domain))
    return type_name, rows, f"v{direction}{nulls}", tail, probe


def _plain(value: object) -> object:
    return float(value) if isinstance(value, decimal.Decimal) else value


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_cases())
def test_deterministic_order_matches_duckdb(harness: Differential, case: _Case) -> None:
    type_name, rows, key, tail, probe = case
    table = f"det_order_{next(_tables)}"
    harness.connection.execute(
        f"CREATE TABLE {table} (id INTEGER, g INTEGER, v {type_name} {DETERMINISTIC_ENCLAVE})"
    )
    harness.oracle.execute(f"CREATE TABLE {table} (id INTEGER, g INTEGER, v {type_name})")
    data = [(number, *row) for number, row in enumerate(rows)]
    if data:
        insert = f"INSERT INTO {table} VALUES (?, ?, ?)"
        harness.connection.bulk_insert(table, data)
        harness.oracle.executemany(insert, data)
    queries: list[tuple[str, list[object]]] = [
        (f"SELECT id, v FROM {table} ORDER BY {key}, id{tail}", []),
        (f"SELECT id FROM {table} ORDER BY g DESC, {key}, id{tail}", []),
        (f"SELECT v, COUNT(*), SUM(g) FROM {table} GROUP BY v ORDER BY {key}{tail}", []),
        (f"SELECT DISTINCT v FROM {table} ORDER BY {key}{tail}", []),
        (f"SELECT id FROM {table} WHERE v <= ? AND g < 2 ORDER BY {key}, id{tail}", [probe]),
        (f"SELECT id FROM {table} WHERE v BETWEEN ? AND ? OR v = ? ORDER BY id", [probe] * 3),
    ]
    for sql, params in queries:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureEnclaveWarning)
            ours = harness.connection.execute(sql, params).fetchall()
        theirs = harness.oracle.execute(sql, params).fetchall()
        assert [tuple(map(_plain, r)) for r in ours] == [tuple(map(_plain, r)) for r in theirs], (
            sql,
            params,
        )

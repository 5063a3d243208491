"""Differential property of ORDER BY over encrypted columns, with and without LIMIT, outermost
and inside a CTE: random tables with ties and NULLs over INTEGER, DECIMAL, DATE and non-ASCII
VARCHAR, random LIMIT and OFFSET (literal or ?), direction and NULLS placement, give the rows
plaintext DuckDB gives. A plaintext id ends every ORDER BY, so the expected order is total."""

from __future__ import annotations

import datetime
import decimal
import itertools
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.client.enclave_session import InsecureEnclaveWarning
from tests.sql.differential import Differential
from tests.support.enclave_differential import create_on_both

_VALUES = {
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "DECIMAL(9,3)": st.decimals(-999_999, 999_999, places=3, allow_nan=False),
    "DATE": st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)),
    "VARCHAR": st.text(alphabet="aAzé漢😀 _", max_size=4),
}
_tables = itertools.count()


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, list[tuple[object, ...]], str, list[object]]:
    type_name = draw(st.sampled_from(sorted(_VALUES)))
    # A small domain, so that ties (at the LIMIT boundary too) are common.
    domain = draw(st.lists(_VALUES[type_name], min_size=1, max_size=4, unique=True))
    cell = st.one_of(st.none(), st.sampled_from(domain))
    rows = draw(st.lists(st.tuples(st.integers(0, 2), cell), max_size=30))
    direction = draw(st.sampled_from(["", " ASC", " DESC"]))
    nulls = draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
    second = draw(st.sampled_from(["id", "g DESC, id", "id DESC"]))
    order = f"ORDER BY v{direction}{nulls}, {second}"
    limit = draw(st.one_of(st.none(), st.integers(0, 35)))
    offset = draw(st.one_of(st.none(), st.integers(0, 10)))
    as_parameters = draw(st.booleans())
    clauses: list[str] = []
    params: list[object] = []
    for word, count in (("LIMIT", limit), ("OFFSET", offset)):
        if count is None:
            continue
        if as_parameters and limit is not None:
            clauses.append(f"{word} ?")
            params.append(count)
        else:
            clauses.append(f"{word} {count}")
    return type_name, rows, " ".join([order, *clauses]), params


def _plain(value: object) -> object:
    return float(value) if isinstance(value, decimal.Decimal) else value


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_cases())
def test_random_order_by_limit_matches_duckdb(
    harness: Differential, case: tuple[str, list[tuple[object, ...]], str, list[object]]
) -> None:
    type_name, rows, order, params = case
    table = f"enclave_order_{next(_tables)}"
    columns = [("id", "INTEGER", False), ("g", "INTEGER", False), ("v", type_name, True)]
    create_on_both(harness, table, columns, [(number, *row) for number, row in enumerate(rows)])
    # The outermost ORDER BY (top-k or full ranks), and the same order inside a CTE, where
    # it chooses the rows the outer query sees (stage-zero ranks) or is dropped (no LIMIT).
    queries = [
        f"SELECT id, v FROM {table} {order}",
        f"WITH top AS (SELECT id, g, v FROM {table} {order}) SELECT id, v FROM top ORDER BY id",
    ]
    for sql in queries:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureEnclaveWarning)
            ours = harness.connection.execute(sql, params).fetchall()
        theirs = harness.oracle.execute(sql, params).fetchall()
        assert [tuple(map(_plain, r)) for r in ours] == [tuple(map(_plain, r)) for r in theirs], (
            sql,
            params,
        )

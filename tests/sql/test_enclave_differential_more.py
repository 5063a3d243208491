"""Differential property of the staged enclave queries: random tables whose GROUP BY key is a
RANDOMIZED enclave-enabled column, with HAVING and ORDER BY over enclave aggregates (stage three),
grouping inside subqueries and CTEs, [NOT] IN (subquery), NOT EXISTS and equi-joins with WHERE
terms below them (stage zero), and UNION, INTERSECT and EXCEPT over the encrypted column, give
the same answers as plaintext DuckDB, NULL keys, NULL aggregates and ties included."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sql.differential import Differential
from tests.support.enclave_differential import (
    assert_same_answers,
    create_on_both,
)

_KEYS = {
    "BIGINT": st.integers(-5, 5),
    "VARCHAR": st.text(alphabet="aAé😀", max_size=2),
}
_tables = itertools.count()


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, list[tuple[object, ...]], int, str, str]:
    key_type = draw(st.sampled_from(sorted(_KEYS)))
    key = st.one_of(st.none(), _KEYS[key_type])
    value = st.one_of(st.none(), st.integers(-20, 20))
    rows = draw(st.lists(st.tuples(st.integers(0, 2), key, value), max_size=20))
    threshold = draw(st.integers(-20, 20))
    aggregate = draw(st.sampled_from(["SUM(w)", "MAX(w)", "MIN(w)", "COUNT(DISTINCT w)"]))
    comparison = draw(st.sampled_from([">", ">=", "<", "=", "<>"]))
    return key_type, rows, threshold, aggregate, comparison


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_cases())
def test_staged_enclave_grouping_matches(
    harness: Differential, case: tuple[str, list[tuple[object, ...]], int, str, str]
) -> None:
    key_type, rows, threshold, aggregate, comparison = case
    table = f"stages_{next(_tables)}"
    columns = [("id", "INTEGER", False), ("g", "INTEGER", False)]
    columns += [("v", key_type, True), ("w", "BIGINT", True)]
    create_on_both(harness, table, columns, [(number, *row) for number, row in enumerate(rows)])
    queries = [
        # Stage three: HAVING and ORDER BY over an enclave aggregate, the key encrypted (the key
        # breaks ties, so the order is total).
        (
            f"SELECT v, {aggregate} AS a FROM {table} GROUP BY v "
            f"HAVING {aggregate} {comparison} ? ORDER BY a DESC NULLS FIRST, v LIMIT 4",
            [threshold],
        ),
        (f"SELECT v, g, COUNT(*) FROM {table} GROUP BY v, g HAVING MIN(w) IS NULL", []),
        (f"SELECT v, MAX(w) FROM {table} GROUP BY 1 ORDER BY 2, 1 NULLS LAST", []),
        # Stage zero: grouping inside a derived table and a CTE.
        (f"SELECT COUNT(*) FROM (SELECT DISTINCT v FROM {table})", []),
        (
            f"WITH c AS (SELECT v, COUNT(*) AS n, SUM(id) AS s FROM {table} WHERE g <> 1 "
            "GROUP BY v) SELECT * FROM c WHERE n > 1",
            [],
        ),
    ]
    # Stage zero of semi-joins, set operations over every branch, and a join whose WHERE terms
    # go below it (a second table under the same key: the rows' values shifted).
    other = f"{table}_other"
    shifted = [(number, row[1]) for number, row in enumerate(reversed(rows)) if number % 3]
    create_on_both(harness, other, [("k", "INTEGER", False), ("v", key_type, True)], shifted)
    queries += [
        (f"SELECT id FROM {table} WHERE v IN (SELECT v FROM {other} WHERE k > ?)", [threshold]),
        (f"SELECT id FROM {table} WHERE v NOT IN (SELECT v FROM {other})", []),
        (
            f"SELECT id FROM {table} AS t WHERE NOT EXISTS "
            f"(SELECT 1 FROM {other} AS o WHERE o.v = t.v AND o.k <> t.g)",
            [],
        ),
        (f"SELECT v FROM {table} WHERE w > ? UNION SELECT v FROM {other}", [threshold]),
        (f"SELECT v FROM {table} INTERSECT SELECT v FROM {other} WHERE k > 1", []),
        (f"SELECT v FROM {table} EXCEPT SELECT v FROM {other}", []),
        (
            f"SELECT t.id, o.k FROM {table} AS t JOIN {other} AS o ON t.v = o.v "
            f"WHERE t.w {comparison} ? AND o.k < 15",
            [threshold],
        ),
    ]
    assert_same_answers(harness, queries)

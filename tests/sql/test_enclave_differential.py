"""Differential property of enclave queries: random tables with RANDOMIZED enclave-enabled
columns, random WHERE predicates (mixed with NOT/AND/OR and plaintext ones), aggregates grouped
by a plaintext key (with HAVING and ORDER BY over them), GROUP BY, DISTINCT, ORDER BY and a
self-join on the encrypted columns give the same answers as plaintext DuckDB."""

from __future__ import annotations

import datetime
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sql.differential import Differential
from tests.support.enclave_differential import (
    assert_same_answers,
    create_on_both,
)

_TYPES = {
    "BIGINT": st.integers(-(2**40), 2**40),
    "VARCHAR": st.text(alphabet="aAbé漢😀 %_-", max_size=5),
    "NVARCHAR(8)": st.text(alphabet="aAzß😀_", max_size=4),
    "DATE": st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)),
    "DECIMAL(9,3)": st.decimals(-999_999, 999_999, places=3, allow_nan=False),
}
_NUMERIC = {"BIGINT", "DECIMAL(9,3)"}
_tables = itertools.count()


def _predicate(draw: st.DrawFn, type_name: str, domain: list[object]) -> tuple[str, list[object]]:
    probe = st.one_of(st.sampled_from(domain), _TYPES[type_name])
    forms = ["=", "<>", "<", "<=", ">", ">=", "BETWEEN", "IN", "NOT IN", "v < w", "IS NULL"]
    if type_name in ("VARCHAR", "NVARCHAR(8)"):
        forms += ["LIKE", "NOT LIKE"]
    form = draw(st.sampled_from(forms))
    if form in ("=", "<>", "<", "<=", ">", ">="):
        return f"v {form} ?", [draw(probe)]
    if form == "BETWEEN":
        low, high = draw(probe), draw(probe)
        return "v BETWEEN ? AND ?", [low, high]
    if form in ("IN", "NOT IN"):
        items = draw(st.lists(probe, min_size=1, max_size=3))
        return f"v {form} ({', '.join('?' for _ in items)})", items
    if form in ("LIKE", "NOT LIKE"):
        pattern = draw(st.text(alphabet="aé%_😀ß", max_size=4))
        return f"v {form} ?", [pattern]
    if form == "v < w":
        return "v < w", []
    return "v IS NULL", []


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, list[tuple[object, ...]], str, list[object]]:
    type_name = draw(st.sampled_from(sorted(_TYPES)))
    domain = draw(st.lists(_TYPES[type_name], min_size=1, max_size=5, unique=True))
    cell = st.one_of(st.none(), st.sampled_from(domain))
    rows = draw(
        st.lists(st.tuples(st.integers(0, 2), cell, cell), max_size=25),
    )
    first, params = _predicate(draw, type_name, domain)
    combine = draw(st.sampled_from(["{p}", "NOT ({p})", "({p}) OR g = 1", "({p}) AND g <> 2"]))
    if draw(st.booleans()):
        second, more = _predicate(draw, type_name, domain)
        combine = combine.replace("{p}", f"({{p}}) OR ({second})")
        params = params + more
    return type_name, rows, combine.replace("{p}", first), params


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_cases())
def test_random_enclave_predicates_and_aggregates_match(
    harness: Differential, case: tuple[str, list[tuple[object, ...]], str, list[object]]
) -> None:
    type_name, rows, predicate, params = case
    table = f"enclave_prop_{next(_tables)}"
    columns = [("id", "INTEGER", False), ("g", "INTEGER", False)]
    columns += [("v", type_name, True), ("w", type_name, True)]
    create_on_both(harness, table, columns, [(number, *row) for number, row in enumerate(rows)])
    queries = [(f"SELECT id FROM {table} WHERE {predicate}", params)]
    aggregates = "MIN(v), MAX(v), COUNT(DISTINCT v), COUNT(v)"
    if type_name in _NUMERIC:
        aggregates += ", SUM(v)"
    queries.append((f"SELECT g, {aggregates} FROM {table} GROUP BY g ORDER BY g", []))
    queries.append((f"SELECT {aggregates} FROM {table} WHERE {predicate}", params))
    queries.append((f"SELECT v, COUNT(*), MAX(g) FROM {table} GROUP BY v ORDER BY v", []))
    # HAVING and ORDER BY over enclave aggregates (the probe may or may not be a value).
    if params and params[0] is not None:
        having = f"SELECT g FROM {table} GROUP BY g HAVING MAX(v) >= ? OR COUNT(*) = 1"
        queries.append((having, [params[0]]))
    queries.append((f"SELECT g, MIN(v) AS m FROM {table} GROUP BY g ORDER BY m DESC, g", []))
    queries.append((f"SELECT id, v FROM {table} WHERE {predicate} ORDER BY v DESC, id", params))
    queries.append((f"SELECT a.id, b.id FROM {table} AS a JOIN {table} AS b ON a.v = b.w", []))
    queries.append((f"SELECT DISTINCT w FROM {table}", []))
    assert_same_answers(harness, queries)

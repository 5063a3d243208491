"""The staged enclave plans: stage three (HAVING and ORDER BY over enclave aggregates with an
encrypted GROUP BY key), stage-zero reads of grouping below the outermost SELECT, semi-joins,
set operations, and the WHERE terms pushed below an equi-join.

Stages run on plaintext DuckDB here, where a column's values stand in for its enclave group ids
(equal values, equal ids, ascending alike); the answer must be the input's. The real enclave
runs them in tests/sql/enclave_*.test.
"""

from __future__ import annotations

import pytest
from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql import describe, parse_statements
from engine.sql.describe import _render_read
from engine.sql.parameterize_literals import USER_INDEX
from engine.sql.plan import Plan
from engine.sql.rewrite_enclave_joins import GROUP_ID
from engine.sql.rewrite_enclave_order import STAGE_VIEW
from tests.sql.fixtures.catalog import CATALOG, plaintext_db
from tests.support.stage_zero import run_stage_zero


def _plan(sql: str) -> Plan:
    return describe(parse_statements(sql)[0], CATALOG, enclave_available=True)


def _same(got: list[tuple[object, ...]], want: list[tuple[object, ...]], ordered: bool) -> None:
    if not ordered:
        got, want = sorted(got, key=repr), sorted(want, key=repr)
    assert got == want


def test_stage_three_filters_and_sorts_after_the_grouped_aggregates() -> None:
    sql = (
        "SELECT dob, MAX(dob) AS m FROM patients GROUP BY dob "
        "HAVING MAX(dob) > '1980-01-01' AND COUNT(*) >= ? ORDER BY 2 DESC, dob LIMIT 2"
    )
    plan = _plan(sql)
    assert plan.finish_sql is not None and plan.final_sql is not None
    # Later stages run without parameters: every ? is in stage one.
    assert "?" not in plan.finish_sql and "?" not in plan.final_sql
    assert plan.final_sql.startswith("SELECT * EXCLUDE (")
    assert "LIMIT 2" in plan.final_sql and "LIMIT" not in plan.finish_sql
    stages = [(o.operator, o.stage) for o in plan.enclave_operations if o.operator != "GT"]
    assert stages == [("GROUP", 1), ("MAX", 2), ("MAX", 2), ("MAX", 2), ("RANK", 2)]
    # The rank replaces the cells of the column the aggregate call filled before it.
    ranked = [o for o in plan.enclave_operations if o.operator == "RANK"][0]
    assert plan.enclave_operations[-2].result_column == ranked.result_column
    assert [c.name for c in plan.result_columns] == ["dob", "m"]
    assert _plan(plan.parameterized_sql or "").final_sql == plan.final_sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM (SELECT DISTINCT dob FROM patients)",
        "WITH g AS (SELECT dob, COUNT(*) AS n FROM patients GROUP BY dob) SELECT * FROM g",
        "SELECT s.n FROM (SELECT name, dob, COUNT(*) AS n FROM patients WHERE id > 1 "
        "GROUP BY name, dob) AS s",
        "SELECT x.dob FROM (SELECT dob FROM patients GROUP BY dob ORDER BY dob DESC LIMIT 2) x",
    ],
)
def test_grouping_below_the_outermost_select_reads_stage_zero(sql: str) -> None:
    plan = _plan(sql)
    # The table read with the grouped SELECT's own WHERE terms (fewer cells for the enclave).
    where = " WHERE patients.id > 1" if "WHERE id > 1" in sql else ""
    assert [s.sql for s in plan.group_stages] == [f"SELECT * FROM patients AS patients{where}"]
    assert [o.operator for o in plan.enclave_operations] == ["GROUP"]
    assert "ANY_VALUE" in (plan.sql or "") or "COUNT(*)" in (plan.sql or "")
    connection = run_stage_zero(plan)
    _same(
        connection.execute(plan.sql).fetchall(),
        connection.execute(sql).fetchall(),
        "LIMIT" in sql,
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM patients WHERE dob IN (SELECT p.dob FROM patients AS p WHERE p.id > 1)",
        "SELECT id FROM patients WHERE dob NOT IN (SELECT p.dob FROM patients AS p)",
        "SELECT id FROM patients WHERE id < 4 AND dob NOT IN "
        "(SELECT p.dob FROM patients AS p WHERE p.dob IS NOT NULL AND p.id = 1)",
        "SELECT a.id FROM patients AS a WHERE EXISTS "
        "(SELECT 1 FROM patients AS b WHERE b.dob = a.dob AND b.id <> a.id)",
    ],
)
def test_semi_joins_compare_group_ids(sql: str) -> None:
    plan = _plan(sql)
    assert [s.operation.operator for s in plan.join_stages] == ["GROUP"]
    assert GROUP_ID in (plan.sql or "")
    connection = run_stage_zero(plan)
    _same(connection.execute(plan.sql).fetchall(), connection.execute(sql).fetchall(), False)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT dob FROM patients UNION SELECT dob FROM patients WHERE id > 2",
        "SELECT dob, name FROM patients INTERSECT SELECT dob, name FROM patients WHERE id < 3",
        "SELECT dob FROM patients EXCEPT SELECT dob FROM patients WHERE id = 1 ORDER BY dob",
    ],
)
def test_set_operations_group_every_branch_at_once(sql: str) -> None:
    plan = _plan(sql)
    assert [(o.operator, o.stage) for o in plan.enclave_operations] == [("GROUP", 1)]
    # EXPLAIN names the set operation, not the GROUP BY it became.
    assert plan.enclave_operations[0].construct in sql.split()
    assert plan.finish_sql is not None
    connection = plaintext_db()
    connection.register(STAGE_VIEW, connection.sql(plan.sql).to_arrow_table())
    _same(
        connection.execute(plan.finish_sql).fetchall(),
        connection.execute(sql).fetchall(),
        "ORDER BY" in sql,
    )


def test_where_terms_go_below_an_equi_join_with_their_parameter_values() -> None:
    sql = (
        "SELECT a.id, b.id FROM patients AS a JOIN patients AS b ON a.dob = b.dob "
        "WHERE a.id > ? AND b.dob < '2000-01-01' AND a.id + b.id > 0"
    )
    plan = _plan(sql)
    (stage,) = plan.join_stages
    assert stage.left_sql == "SELECT * FROM patients AS a WHERE a.id > ?"
    assert stage.right_sql.startswith("SELECT * FROM patients AS b WHERE __EE_")
    # Each ? of a read takes the value of an equal ? of the statement.
    assert [plan.parameters[i].source for i in stage.left_parameters] == [("user", 0)]
    right = [plan.parameters[i].source[0] for i in stage.right_parameters]
    assert right[0] == "enclave_query" and all(r.startswith("enclave_") for r in right)
    outer = _plan(
        "SELECT a.id FROM patients AS a LEFT JOIN patients AS b ON a.dob = b.dob "
        "WHERE a.id > 1 AND b.id IS NULL"
    )
    assert outer.join_stages[0].left_sql == "SELECT * FROM patients AS a WHERE a.id > 1"
    assert outer.join_stages[0].right_sql == "SELECT * FROM patients AS b"


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT dob FROM patients INTERSECT ALL SELECT dob FROM patients", "INTERSECT ALL"),
        ("SELECT dob FROM patients EXCEPT ALL SELECT dob FROM patients", "EXCEPT ALL"),
        (
            "SELECT COUNT(*) FROM (SELECT dob FROM patients UNION SELECT dob FROM patients)",
            "outermost statement",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT DISTINCT d FROM (SELECT dob AS d FROM patients) s)",
            "FROM clause",
        ),
    ],
)
def test_what_does_not_fit_is_refused_before_running(sql: str, text: str) -> None:
    with pytest.raises(NotSupportedError) as raised:
        _plan(sql)
    assert text in str(raised.value)


def test_a_read_whose_values_the_statement_lacks_reads_the_whole_table() -> None:
    read = exp.select("*").from_("patients").where("patients.id > ?")
    placeholder = read.find(exp.Placeholder)
    assert placeholder is not None
    placeholder.meta[USER_INDEX] = 3
    assert _render_read(read, ()) == ("SELECT * FROM patients", ())
    bound = describe(parse_statements("SELECT ?, ?, ?, ?")[0], CATALOG, enclave_available=True)
    text, indices = _render_read(read, bound.parameters)
    assert (text, indices) == ("SELECT * FROM patients WHERE patients.id > ?", (3,))

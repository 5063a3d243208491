"""Rewrite-rule fixtures of the enclave rules (tests/sql/fixtures/rewrite_enclave_predicates.sql)
and the refusals that must happen before anything runs.

The text pairs pin the rewrite. The aggregate and ORDER BY stages also run on plaintext DuckDB
here; the predicates' answers are compared with plaintext DuckDB end to end, through the real
enclave, by tests/sql/enclave_*.test (a plaintext stand-in for the UDFs would test itself).
"""

from __future__ import annotations

import pytest

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql import describe, parse_statements
from engine.sql.plan import ENCLAVE_ROLES
from engine.sql.rewrite_enclave_order import STAGE_VIEW
from tests.sql.fixtures.catalog import CATALOG, plaintext_db
from tests.support.stage_zero import run_stage_zero
from tests.unit.test_sql_fixtures import Pair, _ids, load_pairs

PREDICATES = load_pairs("rewrite_enclave_predicates.sql")


def _plan(sql: str, enclave: bool = True):  # noqa: ANN202 - a Plan
    return describe(parse_statements(sql)[0], CATALOG, enclave_available=enclave)


@pytest.mark.parametrize("pair", PREDICATES, ids=_ids(PREDICATES))
def test_rewrite_enclave_predicates(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    ops = [(op.operator, list(op.operands)) for op in plan.enclave_operations]
    assert ops == [(name, list(operands)) for name, operands in pair.directives.get("ops", [])]
    if "params" in pair.directives:
        roles = [
            s.source[0] if s.source[0] in ENCLAVE_ROLES else (s.source[0], s.source[1])
            for s in plan.parameters
        ]
        assert roles == pair.directives["params"]
    for operation in plan.enclave_operations:
        assert operation.target.label == "patients.dob"
        assert operation.type_form == "DATE"
    if plan.enclave_operations:
        # The client lets the host describe the lifted text, which must rewrite to the same SQL.
        assert plan.parameterized_sql is not None
        assert _plan(plan.parameterized_sql).sql == plan.sql
        assert "cek_enclave" in plan.required_keys


def test_the_rewrite_needs_the_enclave() -> None:
    with pytest.raises(ProgrammingError, match="attestation_protocol"):
        _plan("SELECT id FROM patients WHERE dob < '2000-01-01'", enclave=False)


@pytest.mark.parametrize(
    ("sql", "error", "text"),
    [
        ("SELECT id FROM patients WHERE dob ILIKE 'x'", NotSupportedError, "ILIKE"),
        ("SELECT id FROM patients WHERE dob LIKE '1990%'", NotSupportedError, "string column"),
        (
            "SELECT id FROM patients WHERE dob IN (SELECT s.dob FROM (SELECT dob FROM patients) s)",
            NotSupportedError,
            "IN (subquery)",
        ),
        ("SELECT id FROM patients WHERE dob IN ('1990-01-01', NULL)", NotSupportedError, "NULL"),
        ("SELECT id FROM patients WHERE dob < id", ProgrammingError, "plaintext"),
        ("SELECT id FROM patients WHERE salary < 5", ProgrammingError, "enclave-enabled"),
        # ssn is DETERMINISTIC under a key that is not enclave-enabled: MIN needs the enclave.
        ("SELECT MIN(ssn) FROM patients", ProgrammingError, "DETERMINISTIC"),
        ("SELECT id FROM patients WHERE dob + 1 < 5", NotSupportedError, "arithmetic"),
        ("SELECT id FROM patients WHERE '1990-01-01' BETWEEN dob AND dob", NotSupportedError, ""),
    ],
)
def test_refusals_name_the_column_and_construct(sql: str, error: type, text: str) -> None:
    with pytest.raises(error) as raised:
        _plan(sql)
    assert text in str(raised.value)
    assert "1990" not in str(raised.value)  # no literal value in a message


ORDER = load_pairs("rewrite_enclave_order.sql")


@pytest.mark.parametrize("pair", ORDER, ids=_ids(ORDER))
def test_rewrite_enclave_order(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    assert plan.finish_sql == pair.directives["finish"]
    ranks = [op for op in plan.enclave_operations if op.operator in ("RANK", "TOP_K")]
    assert [op.target.label for op in ranks] == ["patients.dob"]
    assert [op.operator for op in ranks] == pair.directives["ops"]
    # The rank column is where stage one puts it; the sort keys are not result columns.
    assert ranks[0].result_column is not None
    assert f"AS __ee_rank_{ranks[0].result_column - 2}" in plan.sql
    assert [c.name for c in plan.result_columns] == ["id", pair.input.split(",")[1].split()[0]]


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT dob FROM patients UNION ALL SELECT dob FROM patients ORDER BY dob", "UNION"),
        ("SELECT name FROM patients GROUP BY name ORDER BY MIN(dob) + 1", "ORDER BY"),
        ("SELECT id FROM patients ORDER BY id, dob LIMIT ?", "? parameter"),
        ("SELECT ROW_NUMBER() OVER (ORDER BY dob) FROM patients", "window"),
        (
            "WITH a AS (SELECT id, dob FROM patients) "
            "SELECT id FROM (SELECT id, dob FROM a ORDER BY dob LIMIT 3) AS s",
            "outermost",
        ),
        ("SELECT id FROM (SELECT id FROM patients ORDER BY dob + 1 LIMIT 1) AS s", "arithmetic"),
        ("SELECT string_agg(name ORDER BY dob) FROM patients", "outermost"),
    ],
)
def test_order_refusals(sql: str, text: str) -> None:
    with pytest.raises(NotSupportedError) as raised:
        _plan(sql)
    assert text in str(raised.value)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT ROW_NUMBER() OVER (ORDER BY dob) FROM patients", "RANDOMIZED"),
        ("SELECT ROW_NUMBER() OVER (ORDER BY zip) FROM patients", "DETERMINISTIC"),
    ],
)
def test_order_refusals_name_the_column_s_own_encryption_type(sql: str, kind: str) -> None:
    with pytest.raises(NotSupportedError) as raised:
        _plan(sql)
    assert f"is {kind}: ORDER BY over it" in str(raised.value)


@pytest.mark.parametrize(
    "sql",
    [
        "WITH top AS (SELECT id, dob FROM patients ORDER BY dob DESC, id LIMIT 3) "
        "SELECT id FROM top",
        "SELECT s.id FROM (SELECT p.id, p.dob AS d FROM patients AS p WHERE p.id > 1 "
        "ORDER BY d NULLS FIRST, p.id LIMIT 2 OFFSET 1) AS s",
        "SELECT id FROM patients WHERE id IN (SELECT id FROM patients ORDER BY dob, id OFFSET 2)",
    ],
)
def test_inner_order_with_limit_reads_ranks_in_stage_zero(sql: str) -> None:
    """A nested ORDER BY that feeds LIMIT or OFFSET sorts on ranks appended in stage zero.
    Differential: stage zero on plaintext DuckDB (the values in place of the ranks sort the
    same), then the statement, gives the input's rows."""
    plan = _plan(sql)
    assert plan.sql is not None and len(plan.group_stages) == 1
    stage = plan.group_stages[0]
    assert [op.operator for op in stage.operations] == ["RANK"]
    assert [(op.operator, op.stage) for op in plan.enclave_operations] == [("RANK", 0)]
    connection = plaintext_db()
    extra = ", ".join(f"{c} AS {i}" for c, i in zip(stage.columns, stage.id_columns, strict=True))
    rows = connection.sql(f"SELECT *, {extra} FROM patients").to_arrow_table()
    connection.register(stage.view, rows)
    assert sorted(connection.execute(plan.sql).fetchall()) == sorted(
        connection.execute(sql).fetchall()
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM (SELECT id, dob FROM patients ORDER BY dob) AS s",
        "WITH s AS (SELECT id, dob FROM patients ORDER BY dob DESC, id) SELECT id FROM s",
        "SELECT id FROM patients WHERE id IN (SELECT id FROM patients ORDER BY dob NULLS FIRST)",
        "SELECT id FROM patients AS p WHERE EXISTS (SELECT 1 FROM patients ORDER BY dob)",
    ],
)
def test_inner_order_without_limit_is_dropped(sql: str) -> None:
    """An encrypted ORDER BY of a nested query without LIMIT or OFFSET has no effect on the
    answer, so it is dropped instead of reaching the enclave: same rows as the input."""
    plan = _plan(sql)
    assert plan.sql is not None and "ORDER BY" not in plan.sql
    assert not plan.enclave_operations and plan.finish_sql is None
    connection = plaintext_db()
    assert sorted(connection.execute(plan.sql).fetchall()) == sorted(
        connection.execute(sql).fetchall()
    )


HAVING = load_pairs("rewrite_enclave_having.sql")


@pytest.mark.parametrize("pair", HAVING, ids=_ids(HAVING))
def test_rewrite_enclave_having(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    assert plan.finish_sql == pair.directives["finish"]
    ops = [(o.operator, o.result_column, o.type_form) for o in plan.enclave_operations]
    assert ops == pair.directives["ops"]
    # The comparison constants are encrypted in the aggregate's result type (COUNT(DISTINCT)
    # gives BIGINT), and the stage-one inputs of stage two are no result columns.
    for operation in plan.enclave_operations:
        if operation.result_column is None and operation.type_form == "INT64":
            assert operation.target.declared_type == "BIGINT"
    assert all(not c.name.startswith("__ee_") for c in plan.result_columns)
    assert _plan(plan.parameterized_sql or "").sql == plan.sql
    # Stage one runs on plaintext DuckDB; stage two drops exactly its added columns.
    names = plaintext_db().sql(plan.sql.replace("?", "NULL")).columns
    assert [n for n in names if not n.startswith("__ee_")] == [c.name for c in plan.result_columns]
    added = [n for n in names if n.startswith("__ee_")]
    assert plan.finish_sql.startswith(f"SELECT * EXCLUDE ({', '.join(added)}) FROM __ee_stage")


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT name FROM patients GROUP BY name HAVING MAX(dob) > MIN(dob)", "HAVING"),
        ("SELECT name FROM patients GROUP BY name HAVING MAX(dob) > name", "HAVING"),
        ("SELECT name FROM patients GROUP BY name HAVING MAX(dob) IN ('2000-01-01')", "HAVING"),
        ("SELECT name FROM patients GROUP BY name ORDER BY MAX(dob) LIMIT ?", "? parameter"),
        ("SELECT dob FROM patients GROUP BY dob HAVING MIN(dob) > MAX(dob)", "HAVING"),
        ("SELECT DISTINCT name FROM patients GROUP BY name ORDER BY MAX(dob)", "DISTINCT"),
    ],
)
def test_having_refusals(sql: str, text: str) -> None:
    with pytest.raises(NotSupportedError) as raised:
        _plan(sql)
    assert text in str(raised.value)


AGGREGATES = load_pairs("rewrite_enclave_aggregates.sql")
_PLAINTEXT_AGGREGATES = {
    "MIN": lambda values: min(values, default=None),
    "MAX": lambda values: max(values, default=None),
    "COUNT_DISTINCT": lambda values: len(set(values)),
}


@pytest.mark.parametrize("pair", AGGREGATES, ids=_ids(AGGREGATES))
def test_rewrite_enclave_aggregates(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    ops = [(o.operator, o.result_column, o.result_type) for o in plan.enclave_operations]
    assert ops == pair.directives["ops"]
    # Differential: the LIST stage on plaintext DuckDB, aggregated here, gives the input's answer.
    staged = [list(row) for row in plaintext_db().execute(plan.sql).fetchall()]
    for operator, column, _ in ops:
        for row in staged:
            values = [v for v in row[column] or [] if v is not None]
            row[column] = _PLAINTEXT_AGGREGATES[operator](values)
    expected = plaintext_db().execute(pair.input).fetchall()
    assert sorted(map(tuple, staged), key=repr) == sorted(expected, key=repr)


def test_rewrite_enclave_order_differential() -> None:
    """Stage one on plaintext DuckDB (values in place of ranks sort the same), then stage two,
    gives the input's rows in the input's order."""
    for pair in ORDER:
        plan = _plan(pair.input)
        assert plan.sql is not None and plan.finish_sql is not None
        connection = plaintext_db()
        params = pair.directives.get("params", [])
        stage = connection.sql(plan.sql, params=params).to_arrow_table()
        for op in plan.enclave_operations:
            if op.source_column is not None and op.result_column is not None:
                # The key's plaintext values in place of the ranks the host would put there.
                name = stage.column_names[op.result_column]
                stage = stage.set_column(op.result_column, name, stage.column(op.source_column))
        connection.register(STAGE_VIEW, stage)
        assert connection.execute(plan.finish_sql).fetchall() == (
            connection.execute(pair.input, params).fetchall()
        )


GROUPING = load_pairs("rewrite_enclave_grouping.sql")


@pytest.mark.parametrize("pair", GROUPING, ids=_ids(GROUPING))
def test_rewrite_enclave_grouping(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    assert plan.finish_sql == pair.directives["finish"]
    groups = [op for op in plan.enclave_operations if op.operator == "GROUP"]
    assert [(op.target.label, op.stage) for op in groups] == [("patients.dob", 1)]
    later = [op for op in plan.enclave_operations if op.operator not in ("GROUP", "GT")]
    assert all(op.stage == 2 for op in later)
    # Differential: both stages on plaintext DuckDB, enclave aggregates applied in Python.
    connection = plaintext_db()
    connection.register(STAGE_VIEW, connection.sql(plan.sql).to_arrow_table())
    rows = [list(row) for row in connection.execute(plan.finish_sql).fetchall()]
    for operation in later:
        for row in rows:
            values = [v for v in row[operation.result_column] or [] if v is not None]
            row[operation.result_column] = _PLAINTEXT_AGGREGATES[operation.operator](values)
    expected = connection.execute(pair.input).fetchall()
    ordered = "ORDER BY" in pair.input
    got = [tuple(row) for row in rows]
    assert (got if ordered else sorted(got, key=repr)) == (
        expected if ordered else sorted(expected, key=repr)
    )
    assert [c.name for c in plan.result_columns] == [d[0] for d in connection.description or []]


JOINS = load_pairs("rewrite_enclave_joins.sql")


@pytest.mark.parametrize("pair", JOINS, ids=_ids(JOINS))
def test_rewrite_enclave_joins(pair: Pair) -> None:
    plan = _plan(pair.input)
    assert plan.sql == pair.expected
    assert [s.operation.operator for s in plan.join_stages] == ["GROUP"]
    assert [(o.operator, o.stage) for o in plan.enclave_operations] == [("GROUP", 0)]
    connection = run_stage_zero(plan)  # the join sides' values stand in for group ids
    got = sorted(connection.execute(plan.sql).fetchall(), key=repr)
    assert got == sorted(connection.execute(pair.input).fetchall(), key=repr)
    assert got  # the fixture data has matches


@pytest.mark.parametrize(
    ("sql", "native"),
    [
        ("SELECT ssn, COUNT(*) FROM patients GROUP BY ssn", [("GROUP BY", "patients.ssn")]),
        ("SELECT DISTINCT ssn FROM patients", [("DISTINCT", "patients.ssn")]),
        ("SELECT COUNT(DISTINCT ssn) FROM patients", [("COUNT(DISTINCT)", "patients.ssn")]),
        ("SELECT id FROM patients WHERE ssn IN (?, ?)", [("IN", "patients.ssn")]),
        (
            "SELECT p.id FROM patients AS p JOIN visits AS v ON p.ssn = v.patient_ssn",
            [("=", "patients.ssn")],
        ),
        ("SELECT id FROM patients WHERE dob < ?", []),
        ("SELECT id FROM patients WHERE id = 1", []),
    ],
)
def test_plans_name_the_work_duckdb_runs_on_deterministic_ciphertext(
    sql: str, native: list[tuple[str, str]]
) -> None:
    # What EXPLAIN lists as "duckdb deterministic ciphertext"; randomized work is not in it.
    assert list(_plan(sql).native_operations) == native

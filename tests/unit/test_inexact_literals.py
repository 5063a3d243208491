"""Comparisons of encrypted exact-numeric columns with values their type cannot hold, and the
same enclave predicate written twice in one statement.

exact_comparand is checked against plaintext DuckDB on every cell a bound could separate; the
rewrite rule is checked by running the input and the described SQL on plaintext DuckDB.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.client.client import Client, PreparedStatement
from engine.errors import OperationalError
from engine.sql import describe, parse_statements
from engine.sql.plan import Plan
from engine.sql.rewrite_inexact_comparisons import exact_comparand
from tests.sql.fixtures.catalog import CATALOG, plaintext_db

SQL_OPERATORS = {"EQ": "=", "NE": "<>", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "DECIMAL(4,2)": (Decimal("-99.99"), Decimal("99.99")),
    "DECIMAL(12,3)": (Decimal("-999999999.999"), Decimal("999999999.999")),
    "DECIMAL(18,2)": (Decimal("-" + "9" * 16 + ".99"), Decimal("9" * 16 + ".99")),
}
STEPS = {name: Decimal("0.001") if name == "DECIMAL(12,3)" else Decimal("0.01") for name in RANGES}
for _name in RANGES:
    if not _name.startswith("DECIMAL"):
        STEPS[_name] = Decimal(1)


def _cells(declared: str, value: Decimal) -> list[Any]:
    """The type's ends and the cells next to ``value``: every cell a wrong bound would misplace."""
    low, high = (Decimal(x) for x in RANGES[declared])
    step = STEPS[declared]
    with localcontext() as context:
        context.prec = 100
        near = value.quantize(step)
    cells = {low, low + step, high - step, high, Decimal(0)}
    cells |= {near + k * step for k in (-2, -1, 0, 1, 2)}
    kept = sorted(c for c in cells if low <= c <= high)
    return [int(c) if step == 1 else c for c in kept]


NUMBERS = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**11), max_value=10**11
    ),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.sampled_from(
        [Decimal("1.5"), Decimal("2.0"), Decimal("99.995"), 127.5, 2**31, -(2**31) - 1]
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    declared=st.sampled_from(sorted(RANGES)),
    operator=st.sampled_from(sorted(SQL_OPERATORS)),
    value=NUMBERS,
)
def test_exact_comparand_answers_as_duckdb(declared: str, operator: str, value: Any) -> None:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    cells = [*_cells(declared, number), None]
    connection = duckdb.connect()
    connection.execute(f"CREATE TABLE c (x {declared})")
    connection.executemany("INSERT INTO c VALUES (?)", [[cell] for cell in cells])
    symbol = SQL_OPERATORS[operator]
    expected = connection.execute(f"SELECT x, x {symbol} ? FROM c ORDER BY x", [value]).fetchall()
    kind, exact = exact_comparand(value, declared, operator)
    if kind == "value":
        got = connection.execute(f"SELECT x, x {symbol} ? FROM c ORDER BY x", [exact]).fetchall()
        # The value the client encrypts must be one of the column's type, unrounded.
        assert connection.execute(f"SELECT CAST(? AS {declared}) = ?", [exact, exact]).fetchone()
    else:
        truth = kind == "all"
        got = [(x, None if x is None else truth) for x, _ in expected]
    assert got == expected


def test_values_past_the_default_decimal_precision() -> None:
    # DECIMAL(38,2) values have more digits than Python's default context (28) holds.
    largest = Decimal("9" * 36 + ".99")
    past = Decimal("9" * 36 + ".991")  # written out: arithmetic would round at 28 digits
    assert exact_comparand(largest, "DECIMAL(38,2)", "EQ") == ("value", largest)
    assert exact_comparand(past, "DECIMAL(38,2)", "EQ") == ("none", None)
    assert exact_comparand(Decimal("9" * 36 + ".989"), "DECIMAL(38,2)", "LE") == (
        "value",
        Decimal("9" * 36 + ".98"),
    )
    assert exact_comparand(past, "DECIMAL(38,2)", "LT") == ("all", None)
    assert exact_comparand(10**60, "BIGINT", "NE") == ("all", None)
    assert exact_comparand(-(10**60), "UBIGINT", "GE") == ("all", None)


def test_non_numbers_and_other_types_are_left_alone() -> None:
    assert exact_comparand("1.5", "INTEGER", "EQ") == ("value", "1.5")
    assert exact_comparand(True, "INTEGER", "EQ") == ("value", True)
    assert exact_comparand(Decimal("1.5"), "DOUBLE", "EQ") == ("value", Decimal("1.5"))
    assert exact_comparand(None, "INTEGER", "LT") == ("value", None)


# The rule through describe: (input, the text describe must give). zip is a DETERMINISTIC
# INTEGER column; its literals are lifted, so the described SQL binds them back as plaintext.
REWRITES = [
    (
        "SELECT id FROM patients WHERE zip = 1.5",
        "SELECT patients.id AS id FROM patients AS patients WHERE (patients.zip IS NULL AND NULL)",
    ),
    (
        "SELECT id, zip <> 1.5 FROM patients",
        "SELECT patients.id AS id, (NOT patients.zip IS NULL OR NULL) AS _col_1 "
        "FROM patients AS patients",
    ),
    (
        "SELECT id FROM patients WHERE zip = 75001.0 OR zip IN (1.5, 69001.00)",
        "SELECT patients.id AS id FROM patients AS patients "
        "WHERE patients.zip = ? OR patients.zip IN (?)",
    ),
    (
        "SELECT id FROM patients WHERE zip IN (0.5, 2.5) OR NOT zip IN (0.5)",
        "SELECT patients.id AS id FROM patients AS patients "
        "WHERE (patients.zip IS NULL AND NULL) OR NOT (patients.zip IS NULL AND NULL)",
    ),
    (
        "SELECT id FROM patients WHERE zip = 3000000000 OR id = 3",
        "SELECT patients.id AS id FROM patients AS patients "
        "WHERE (patients.zip IS NULL AND NULL) OR patients.id = 3",
    ),
]


@pytest.mark.parametrize("pair", REWRITES, ids=[str(i) for i in range(len(REWRITES))])
def test_rewrite_gives_the_plaintext_answer(pair: tuple[str, str]) -> None:
    source, expected = pair
    plan = describe(parse_statements(source)[0], CATALOG, enclave_available=False)
    assert plan.sql == expected
    bound = [spec.source[1] for spec in plan.parameters]
    assert all(spec.source[0] == "literal" for spec in plan.parameters)
    oracle = plaintext_db()
    assert sorted(oracle.execute(source).fetchall(), key=repr) == sorted(
        oracle.execute(plan.sql, bound).fetchall(), key=repr
    )


def test_an_assignment_is_not_a_comparison() -> None:
    plan = describe(
        parse_statements("UPDATE patients SET zip = 1.5 WHERE zip = 2.5")[0],
        CATALOG,
        enclave_available=False,
    )
    # SET keeps its value (the client rounds it as DuckDB does); the WHERE matches nothing.
    assert [spec.source for spec in plan.parameters] == [("literal", Decimal("1.5"))]
    assert plan.sql == "UPDATE patients SET zip = ? WHERE (zip IS NULL AND NULL)"


# The same enclave predicate twice: dob is a RANDOMIZED DATE column under an enclave CMK.


def _client_and_host(sql: str) -> tuple[PreparedStatement, Plan]:
    """The client's description and the host's, of the text the client would send it."""
    mine = describe(parse_statements(sql)[0], CATALOG, enclave_available=True)
    host_text = mine.parameterized_sql or sql
    host = describe(parse_statements(host_text)[0], CATALOG, enclave_available=True)
    return PreparedStatement(host_text, mine), host


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT dob > DATE '2000-01-01', dob > DATE '2000-01-01' FROM patients",
        "SELECT CASE WHEN dob > DATE '2000-01-01' THEN 1 END FROM patients "
        "WHERE NOT (dob > DATE '2000-01-01') OR dob IS NULL",
        "SELECT id FROM patients WHERE dob IN (DATE '2000-02-02') AND dob IN (DATE '2000-02-02')",
    ],
)
def test_a_repeated_enclave_predicate_is_one_operation_per_occurrence(sql: str) -> None:
    prepared, host = _client_and_host(sql)
    assert len(prepared.plan.enclave_operations) == 2
    assert len(host.enclave_operations) == 2
    Client.check_host_plan(prepared, host)


def test_the_host_plan_check_still_refuses_a_missing_operation() -> None:
    prepared, host = _client_and_host(
        "SELECT dob > DATE '2000-01-01', dob > DATE '2000-01-01' FROM patients"
    )
    dropped = Plan(**{**vars(host), "enclave_operations": host.enclave_operations[:1]})
    with pytest.raises(OperationalError, match="described the statement differently"):
        Client.check_host_plan(prepared, dropped)


def test_a_compared_parameter_is_marked_and_an_assigned_one_is_not() -> None:
    plan = describe(
        parse_statements("UPDATE patients SET zip = ? WHERE zip = ? OR zip IN (?, 1) OR id = ?")[0],
        CATALOG,
        enclave_available=False,
    )
    assert [(spec.source, spec.compared) for spec in plan.parameters] == [
        (("user", 0), False),
        (("user", 1), True),
        (("user", 2), True),
        (("literal", 1), False),
        (("user", 3), False),
    ]

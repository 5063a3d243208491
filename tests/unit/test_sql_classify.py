"""Classification table: for each column kind and operation, where it runs or how it is refused.

The expectations are written out here from the rules (DESIGN.md "The query path"), not taken
from the code. Every refusal must name the column and the operation and never the literal.
"""

from __future__ import annotations

import pytest

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql import describe, parse_statements
from tests.sql.fixtures.catalog import CATALOG

# column -> (kind, a literal of its type that must never leak); see tests/sql/fixtures/catalog.py
COLUMNS = {
    "ssn": ("det", "'CANARY-7731'"),
    "zip": ("det_enclave_key", "987654321"),
    "salary": ("rnd", "987654321"),
    "dob": ("rnd_enclave_key", "DATE '1977-03-31'"),
}
CANARIES = ("CANARY-7731", "987654321", "1977-03-31")

# operation -> (SQL template, words the message must contain)
OPERATIONS = {
    "select": ("SELECT {c} FROM patients", ""),
    "=": ("SELECT id FROM patients WHERE {c} = {v}", "="),
    "<>": ("SELECT id FROM patients WHERE {c} <> {v}", "<>"),
    "IN": ("SELECT id FROM patients WHERE {c} IN ({v}, {v})", "IN"),
    "NOT IN": ("SELECT id FROM patients WHERE {c} NOT IN ({v})", "IN"),
    "IS NULL": ("SELECT id FROM patients WHERE {c} IS NULL", ""),
    "IS NOT NULL": ("SELECT id FROM patients WHERE {c} IS NOT NULL", ""),
    "COUNT": ("SELECT COUNT({c}), COUNT(*) FROM patients", ""),
    "COUNT DISTINCT": ("SELECT COUNT(DISTINCT {c}) FROM patients", "COUNT(DISTINCT)"),
    "GROUP BY": ("SELECT {c}, COUNT(*) FROM patients GROUP BY {c}", "GROUP BY"),
    "DISTINCT": ("SELECT DISTINCT {c} FROM patients", "DISTINCT"),
    "JOIN": ("SELECT a.id FROM patients a JOIN patients b ON a.{c} = b.{c}", "="),
    "<": ("SELECT id FROM patients WHERE {c} < {v}", "<"),
    ">=": ("SELECT id FROM patients WHERE {c} >= {v}", ">="),
    "BETWEEN": ("SELECT id FROM patients WHERE {c} BETWEEN {v} AND {v}", "BETWEEN"),
    "LIKE": ("SELECT id FROM patients WHERE {c} LIKE 'CANARY-7731%'", "LIKE"),
    "ORDER BY": ("SELECT id FROM patients ORDER BY {c}", "ORDER BY"),
    "MIN": ("SELECT MIN({c}) FROM patients", "MIN"),
    "MAX": ("SELECT MAX({c}) FROM patients", "MAX"),
    "SUM": ("SELECT SUM({c}) FROM patients", "SUM"),
    "AVG": ("SELECT AVG({c}) FROM patients", "AVG"),
    "arithmetic": ("SELECT {c} + 1 FROM patients", "arithmetic"),
    "function": ("SELECT upper({c}) FROM patients", "UPPER"),
    "CAST": ("SELECT CAST({c} AS VARCHAR) FROM patients", "CAST"),
    "CASE": ("SELECT CASE WHEN id = 1 THEN {c} END FROM patients", "CASE"),
    "COALESCE": ("SELECT COALESCE({c}, {v}) FROM patients", "COALESCE"),
    "window": ("SELECT ROW_NUMBER() OVER (PARTITION BY {c}) FROM patients", "window"),
    "windowed COUNT": ("SELECT COUNT({c}) OVER () FROM patients", "window"),
    "concat": ("SELECT {c} || 'x' FROM patients", "||"),
    "bare condition": ("SELECT id FROM patients WHERE {c}", "condition"),
}

NATIVE_EVERYWHERE = {"select", "IS NULL", "IS NOT NULL", "COUNT"}
EQUALITY = {"=", "<>", "IN", "NOT IN", "COUNT DISTINCT", "GROUP BY", "DISTINCT", "JOIN"}
ORDER = {"<", ">=", "BETWEEN", "LIKE", "ORDER BY", "MIN", "MAX", "SUM", "AVG"}
NOWHERE = set(OPERATIONS) - NATIVE_EVERYWHERE - EQUALITY - ORDER
# What the enclave runs today over the DATE column dob (LIKE needs a string, SUM and AVG a
# number): rewritten, not refused.
ENCLAVE_NOW = {"=", "<>", "IN", "NOT IN", "COUNT DISTINCT", "JOIN", "<", ">=", "BETWEEN", "MIN"}
ENCLAVE_NOW |= {"MAX", "ORDER BY", "GROUP BY", "DISTINCT"}
# Order work and the value aggregates on a DETERMINISTIC column under an enclave-enabled key
# (LIKE on the INTEGER zip is refused by the enclave rewrite, as on dob; SUM and AVG, which need a
# number, run over zip).
DET_ENCLAVE = {"<", ">=", "BETWEEN", "LIKE", "ORDER BY", "MIN", "MAX", "SUM", "AVG"}
# What the enclave runs today, by column: dob as above, zip (an INTEGER) also SUM and AVG.
ENCLAVE_NOW_BY_COLUMN = {"dob": ENCLAVE_NOW, "zip": ENCLAVE_NOW | {"SUM", "AVG"}}


def expected(kind: str, operation: str, enclave_available: bool) -> str:
    """The outcome the rules give: native, enclave, programming or not_supported."""
    if operation in NOWHERE:
        return "not_supported"
    if operation in NATIVE_EVERYWHERE:
        return "native"
    if kind.startswith("det"):
        if operation in EQUALITY:
            return "native"
        if kind == "det_enclave_key" and enclave_available and operation in DET_ENCLAVE:
            return "enclave"  # the enclave ranks, compares and aggregates its cells
        return "programming"
    if kind == "rnd_enclave_key" and enclave_available:
        return "enclave"
    return "programming"


CASES = [
    (column, operation, available)
    for column in COLUMNS
    for operation in OPERATIONS
    for available in (False, True)
]


@pytest.mark.parametrize(("column", "operation", "available"), CASES)
def test_classification(column: str, operation: str, available: bool) -> None:
    kind, literal = COLUMNS[column]
    template, words = OPERATIONS[operation]
    sql = template.format(c=column, v=literal)
    outcome = expected(kind, operation, available)
    statement = parse_statements(sql)[0]
    enclave_now = ENCLAVE_NOW_BY_COLUMN.get(column, ENCLAVE_NOW)
    if outcome == "native" or (outcome == "enclave" and operation in enclave_now):
        plan = describe(statement, CATALOG, enclave_available=available)
        assert plan.sql is not None
        for canary in CANARIES:
            assert canary not in plan.sql
        assert bool(plan.enclave_operations) == (outcome == "enclave")
        return
    error_class = ProgrammingError if outcome == "programming" else NotSupportedError
    with pytest.raises(error_class) as caught:
        describe(statement, CATALOG, enclave_available=available)
    message = str(caught.value)
    assert f"patients.{column}" in message
    assert words in message
    for canary in CANARIES:
        assert canary not in message
    if outcome == "enclave":
        assert "in the enclave" in message
    if outcome == "programming" and kind.startswith("rnd"):
        assert "attestation_protocol" in message
        assert ("ENCLAVE_COMPUTATIONS" in message) == (kind == "rnd")
    if outcome == "programming" and kind.startswith("det") and operation in DET_ENCLAVE:
        # Order work and aggregates need the enclave: the message says what would allow it.
        assert "in the enclave" in message and "attestation_protocol" in message
        assert ("ENCLAVE_COMPUTATIONS" in message) == (kind == "det")
    elif outcome == "programming" and kind.startswith("det"):
        assert "RANDOMIZED" in message and "ENCLAVE_COMPUTATIONS" in message


def test_literal_compared_with_encrypted_column_is_parameterized_not_inlined() -> None:
    plan = describe(
        parse_statements("SELECT id FROM patients WHERE ssn = 'CANARY-7731'")[0],
        CATALOG,
        enclave_available=False,
    )
    assert plan.sql is not None and "CANARY" not in plan.sql
    assert [p.source for p in plan.parameters] == [("literal", "CANARY-7731")]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM patients WHERE ssn = name",  # encrypted vs plaintext column
        "SELECT a FROM plain WHERE b IN (SELECT ssn FROM patients)",
        "SELECT p.id FROM patients p JOIN visits v ON p.ssn = v.other_ssn",  # other key
        "SELECT ssn FROM patients UNION ALL SELECT note FROM visits",
        "SELECT ssn FROM patients UNION ALL SELECT other_ssn FROM visits",
        "INSERT INTO archive (id, ssn_text) SELECT id, ssn FROM patients",
        "INSERT INTO archive (id, ssn) SELECT id, city FROM patients",
        "INSERT INTO archive (id, ssn) SELECT id, name FROM patients",
        "UPDATE archive SET ssn_text = ssn",
        "UPDATE archive SET ssn = ssn_text",
        "UPDATE patients SET ssn = upper(name)",
        "CREATE TABLE copy AS SELECT ssn FROM patients",
        "SELECT id FROM patients WHERE ssn = 'CANARY-7731' || 'x'",
        "SELECT id FROM patients WHERE name = (SELECT patient_ssn FROM visits LIMIT 1)",
        "SELECT x.s FROM (SELECT ssn AS s FROM patients UNION ALL SELECT other_ssn FROM visits) x",
        "INSERT INTO patients (id, ssn) VALUES (1)",
    ],
)
def test_never_mix_ciphertext_and_plaintext(sql: str) -> None:
    with pytest.raises(ProgrammingError) as caught:
        describe(parse_statements(sql)[0], CATALOG, enclave_available=True)
    assert "CANARY" not in str(caught.value)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO archive (id, ssn, salary) SELECT id, ssn, salary FROM patients",
        "INSERT INTO archive (ssn) SELECT patient_ssn FROM visits",
        "UPDATE archive SET ssn = ssn",
        "SELECT ssn FROM patients UNION SELECT patient_ssn FROM visits",
        "SELECT id FROM patients WHERE ssn IN (SELECT patient_ssn FROM visits)",
        "SELECT id FROM patients p WHERE EXISTS "
        "(SELECT 1 FROM visits v WHERE v.patient_ssn = p.ssn)",
    ],
)
def test_ciphertext_copies_and_comparisons_under_the_same_key_are_allowed(sql: str) -> None:
    plan = describe(parse_statements(sql)[0], CATALOG, enclave_available=False)
    assert plan.sql is not None


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("SELECT id FROM patients WHERE (ssn, name) = ('CANARY-7731', 'y')", "TUPLE"),
        ("SELECT (SELECT ssn FROM patients LIMIT 1) || 'x'", "||"),
        ("SELECT DISTINCT ON (ssn) id FROM patients", "patients.ssn"),
        ("SELECT COUNT(ssn) FILTER (WHERE id = 1) FROM patients", "FILTER"),
        ("SELECT id FROM patients WHERE ssn", "condition"),
        ("SELECT COLUMNS('s.*') FROM patients", "COLUMNS"),
        ("SELECT to_json(p) FROM patients p", "whole-row"),
        ("SELECT * FROM patients, range(3) r", "cannot be expanded"),
        ("PIVOT patients ON ssn USING count(*)", "PIVOT"),
        ("SELECT * FROM patients JOIN archive USING (ssn)", "COALESCE"),
    ],
)
def test_constructs_hiding_an_encrypted_value_fail_closed(sql: str, words: str) -> None:
    with pytest.raises(NotSupportedError, match=words) as caught:
        describe(parse_statements(sql)[0], CATALOG, enclave_available=True)
    assert "CANARY" not in str(caught.value)


def test_scalar_subquery_keeps_its_target() -> None:
    plan = describe(
        parse_statements("SELECT (SELECT ssn FROM patients LIMIT 1) AS s")[0],
        CATALOG,
        enclave_available=False,
    )
    (column,) = plan.result_columns
    assert column.target is not None and column.target.label == "patients.ssn"


def test_statements_on_encrypted_tables_that_cannot_be_checked_are_refused() -> None:
    for sql in ("COPY patients TO 'out.csv'", "CREATE VIEW v AS SELECT ssn FROM patients"):
        with pytest.raises(NotSupportedError, match="patients"):
            describe(parse_statements(sql)[0], CATALOG, enclave_available=False)

"""compile_aggregate_expression: the typing of + - * inside SUM is DuckDB's (checked against
DuckDB's own typeof over the same column types), the postfix code is in evaluation order,
columns share slots, and every construct the enclave cannot evaluate is refused by name."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp, parse_one

from engine.errors import NotSupportedError
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.compile_aggregate_expression import compile_aggregate_expression
from engine.sql.describe import describe
from engine.sql.dialect import parse_statements
from engine.sql.plan import EncryptionTarget
from engine.sql.resolve_columns import DECLARED, TARGET
from engine.sql.rewrite_enclave_aggregates import parse_shared_slot_name

TYPES = {
    "ei": "INTEGER",
    "eb": "BIGINT",
    "ed": "DECIMAL(15,2)",
    "ee": "DECIMAL(18,4)",
    "ef": "DOUBLE",
    "pi": "INTEGER",
    "pd": "DECIMAL(9,3)",
    "pf": "DOUBLE",
}


def _typed(sql: str) -> exp.Expr:
    """The expression with each column typed as TYPES says (e* encrypted, p* plaintext)."""
    tree = parse_one(sql, read="duckdb")
    for column in tree.find_all(exp.Column):
        declared = TYPES[column.name]
        column.meta[DECLARED] = declared
        if column.name.startswith("e"):
            column.meta[TARGET] = EncryptionTarget("t", column.name, "k", "RANDOMIZED", declared)
    return tree


@pytest.fixture(scope="module")
def oracle() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (" + ", ".join(f"{c} {t}" for c, t in TYPES.items()) + ")")
    return con


_leaf = st.sampled_from([*TYPES, "1", "2", "0.5", "1.25", "0.005", "2e1"])
_expression = st.recursive(
    _leaf,
    lambda children: (
        st.tuples(children, st.sampled_from("+-*"), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        | children.map(lambda child: f"(- {child})")
    ),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None)
@given(_expression)
def test_sum_type_is_duckdbs(oracle: duckdb.DuckDBPyConnection, expression: str) -> None:
    sql = f"({expression}) + ei"  # at least one encrypted column
    try:
        (duckdb_type,) = oracle.execute(f"SELECT typeof(SUM({sql})) FROM t").fetchone() or ("",)
    except duckdb.Error:
        # DuckDB refuses a scale above 38 when it binds; so do we.
        with pytest.raises(NotSupportedError, match="scale"):
            compile_aggregate_expression(_typed(sql))
        return
    compiled, _ = compile_aggregate_expression(_typed(sql))
    if compiled.is_float:
        assert duckdb_type == "DOUBLE"
    elif compiled.integer:
        assert duckdb_type == "HUGEINT"
    else:
        assert duckdb_type == f"DECIMAL(38,{compiled.scale})"


def test_code_is_postfix_and_columns_share_slots() -> None:
    compiled, columns = compile_aggregate_expression(_typed("ed * (1 - pd) + ed * -2.5"))
    assert [c.name for c in columns] == ["ed", "pd"]
    assert [slot.target is not None for slot in compiled.slots] == [True, False]
    assert [(s.type_form, s.scale) for s in compiled.slots] == [("DECIMAL", 2), ("DECIMAL", 3)]
    assert compiled.code == (
        ("slot", 0),
        ("exact", 0, 1),
        ("slot", 1),
        ("sub",),
        ("mul",),
        ("slot", 0),
        ("exact", 1, 25),
        ("neg",),
        ("mul",),
        ("add",),
    )
    assert (compiled.scale, compiled.is_float, compiled.integer) == (5, False, False)


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("ed / 2", r"division \(/\)"),
        ("ed % 2", r"modulo \(%\)"),
        ("ABS(ed)", "the function ABS"),
        ("CAST(ed AS DOUBLE)", "CAST"),
        ("CASE WHEN pi > 0 THEN ed ELSE 0 END", "CASE"),
        ("COALESCE(ed, 0)", "COALESCE"),
        ("pd * 2", "without an encrypted column"),
    ],
)
def test_refusals_name_the_construct(sql: str, construct: str) -> None:
    with pytest.raises(NotSupportedError, match=construct):
        compile_aggregate_expression(_typed(sql))


def test_real_and_text_columns_are_refused() -> None:
    tree = parse_one("x * 2")
    column = tree.find(exp.Column)
    assert column is not None
    for declared in ("REAL", "VARCHAR", "BOOLEAN"):
        column.meta[DECLARED] = declared
        column.meta[TARGET] = EncryptionTarget("t", "x", "k", "RANDOMIZED", declared)
        with pytest.raises(NotSupportedError, match=declared):
            compile_aggregate_expression(tree)


# ---- the rewrite: fixture pair and differential -------------------------------------------------


def _snapshot() -> CatalogSnapshot:
    cmk = ColumnMasterKey("cmk", "PEM_FILE", "/k.pem", True)
    cek = ColumnEncryptionKey("cek", (ColumnEncryptionKeyValue("cmk", "RSA_OAEP", None),))
    rnd = Encryption("cek", "RANDOMIZED")
    columns = (
        ColumnInfo("g", "INTEGER"),
        ColumnInfo("price", "DECIMAL(15,2)", rnd),
        ColumnInfo("disc", "DECIMAL(15,2)", rnd),
        ColumnInfo("tax", "DECIMAL(15,2)"),
    )
    return CatalogSnapshot(1, (cmk,), (cek,), (TableInfo("li", columns),))


PAIR_INPUT = (
    "SELECT g, SUM(price * (1 - disc) * (1 + tax)) AS charge, AVG(price * disc) AS a "
    "FROM li GROUP BY g"
)
# Both aggregates read price and disc: one shared list, each distinct operand one field named
# after its readers (result column, operand); the second item is a placeholder.
PAIR_EXPECTED = (
    "SELECT li.g AS g, LIST(STRUCT_PACK(__ee_s_1_0_2_0 := li.price, __ee_s_1_1_2_1 := li.disc, "
    "__ee_s_1_2 := CAST(li.tax AS DECIMAL(38, 2)))) AS charge, "
    "CAST(NULL AS BLOB) AS a FROM li AS li GROUP BY li.g"
)
# Plain SUM and AVG of a column share its field with an expression that reads it too.
MIXED_INPUT = (
    "SELECT g, SUM(price) AS s, AVG(price) AS a, SUM(price * disc) AS e FROM li GROUP BY g"
)
MIXED_EXPECTED = (
    "SELECT li.g AS g, LIST(STRUCT_PACK(__ee_s_1_0_2_0_3_0 := li.price, __ee_s_3_1 := li.disc)) "
    "AS s, CAST(NULL AS BLOB) AS a, CAST(NULL AS BLOB) AS e FROM li AS li GROUP BY li.g"
)
# The same with one aggregate: its own list of per-row structs.
SINGLE_INPUT = "SELECT g, SUM(price * (1 - disc) * (1 + tax)) AS charge FROM li GROUP BY g"
SINGLE_EXPECTED = (
    "SELECT li.g AS g, LIST(STRUCT_PACK(s0 := li.price, s1 := li.disc, "
    "s2 := CAST(li.tax AS DECIMAL(38, 2)))) AS charge FROM li AS li GROUP BY li.g"
)
ROWS = [
    (1, "100.00", "0.05", "0.08"),
    (1, "20.50", "0.10", None),
    (2, "-3.00", None, "0.01"),
    (2, "7.25", "0.50", "0.00"),
    (3, None, "0.20", "0.10"),
]


def _run(code: tuple[tuple[object, ...], ...], row: dict[str, object]) -> object:
    """A plain Python reading of the program (the test's own oracle of its meaning)."""
    stack: list[Decimal] = []
    for step in code:
        if step[0] == "slot":
            value = row[f"s{step[1]}"]
            if value is None:
                return None
            stack.append(Decimal(value))  # type: ignore[arg-type]
        elif step[0] == "exact":
            stack.append(Decimal(int(step[2])).scaleb(-int(step[1])))  # type: ignore[call-overload]
        elif step[0] == "neg":
            stack.append(-stack.pop())
        else:
            right, left = stack.pop(), stack.pop()
            stack.append(
                {"add": left + right, "sub": left - right, "mul": left * right}[str(step[0])]
            )
    return stack[0]


def _operands(row: list[Any], column: int, holder: int | None) -> list[dict[str, object]]:
    """Each list entry of an aggregate as {"s<k>": operand k}: from its own column, or from the
    shared column's fields named after their readers."""
    if holder is None:
        return list(row[column] or [])
    entries = []
    for item in row[holder] or []:
        own = {}
        for name, value in item.items():
            for reader_column, operand in parse_shared_slot_name(name) or []:
                if reader_column == column:
                    own[f"s{operand}"] = value
        entries.append(own)
    return entries


@pytest.mark.parametrize(
    ("sql", "expected", "operations", "holder"),
    [
        (
            PAIR_INPUT,
            PAIR_EXPECTED,
            [("SUM_EXPR", 1, "DECIMAL(38,6)"), ("AVG_EXPR", 2, "DOUBLE")],
            1,
        ),
        (SINGLE_INPUT, SINGLE_EXPECTED, [("SUM_EXPR", 1, "DECIMAL(38,6)")], None),
        (
            MIXED_INPUT,
            MIXED_EXPECTED,
            [("SUM", 1, "DECIMAL(38,2)"), ("AVG", 2, "DOUBLE"), ("SUM_EXPR", 3, "DECIMAL(38,4)")],
            1,
        ),
    ],
)
def test_rewrite_pair_and_its_stage_on_plaintext_duckdb(
    sql: str, expected: str, operations: list[tuple[str, int, str]], holder: int | None
) -> None:
    plan = describe(parse_statements(sql)[0], _snapshot(), enclave_available=True)
    assert plan.sql == expected
    ops = [(o.operator, o.result_column, o.result_type) for o in plan.enclave_operations]
    assert ops == operations
    # Differential: the LIST stage on plaintext DuckDB, each list reduced here with the program,
    # gives the input's answer.
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE li (g INTEGER, price DECIMAL(15,2), disc DECIMAL(15,2), tax DECIMAL(15,2))"
    )
    con.executemany("INSERT INTO li VALUES (?, ?, ?, ?)", ROWS)
    staged = [list(row) for row in con.execute(plan.sql).fetchall()]
    finished = [list(row) for row in staged]
    for operation in plan.enclave_operations:
        column = operation.result_column
        assert column is not None
        # A plain SUM or AVG reads its one operand as it is.
        code = operation.expression.code if operation.expression else (("slot", 0),)
        for row, out in zip(staged, finished, strict=True):
            entries = _operands(row, column, holder)
            values = [_run(code, item) for item in entries]
            present = [v for v in values if v is not None]
            if not present:
                out[column] = None
            elif operation.operator in ("SUM", "SUM_EXPR"):
                out[column] = sum(present, Decimal(0))
            else:
                out[column] = float(sum(present, Decimal(0)) / len(present))
    answer = con.execute(sql).fetchall()
    assert sorted(map(tuple, finished), key=repr) == sorted(answer, key=repr)

"""Rewrite-rule fixtures: tests/sql/fixtures/<rule>.sql holds "input;" / "expected;" pairs.

Besides the text comparison, plaintext DuckDB is the oracle: the input and the rewritten SQL
(with lifted literals bound back as plaintext parameters) must give the same answer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.sql import describe, parse_statements
from engine.sql.qualify_columns import qualify_columns
from tests.sql.fixtures.catalog import CATALOG, plaintext_db

FIXTURES = Path(__file__).resolve().parents[1] / "sql" / "fixtures"


@dataclass
class Pair:
    input: str
    expected: str
    line: int
    directives: dict[str, Any] = field(default_factory=dict)


def load_pairs(name: str) -> list[Pair]:
    """Read ``input;`` / ``expected;`` pairs; ``-- key: value`` lines before a pair are
    Python-literal directives, other ``--`` lines are comments."""
    pairs: list[Pair] = []
    directives: dict[str, Any] = {}
    pending: list[str] = []
    statement: list[str] = []
    start = 0
    for number, raw in enumerate((FIXTURES / name).read_text().splitlines(), start=1):
        line = raw.strip()
        if line.startswith("--"):
            key, sep, value = line[2:].partition(":")
            if sep and key.strip() in ("params", "args", "ops", "finish"):
                directives[key.strip()] = ast.literal_eval(value.strip())
            continue
        if not line:
            continue
        if not statement:
            start = number
        statement.append(line)
        if line.endswith(";"):
            pending.append(" ".join(statement)[:-1].strip())
            statement = []
            if len(pending) == 2:
                pairs.append(Pair(pending[0], pending[1], start, directives))
                pending, directives = [], {}
    assert not pending and not statement, f"{name}: an unpaired statement at the end"
    return pairs


def _ids(pairs: list[Pair]) -> list[str]:
    return [f"line{p.line}" for p in pairs]


def _answer(sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
    connection = plaintext_db()
    rows = connection.execute(sql, parameters).fetchall()
    if parse_statements(sql)[0].key in ("insert", "update", "delete"):
        rows = [
            (table.name, *row)
            for table in CATALOG.tables
            for row in connection.execute(f"SELECT * FROM {table.name}").fetchall()
        ]
    return sorted(rows, key=repr)


QUALIFY = load_pairs("qualify_columns.sql")


@pytest.mark.parametrize("pair", QUALIFY, ids=_ids(QUALIFY))
def test_qualify_columns(pair: Pair) -> None:
    rewritten = qualify_columns(parse_statements(pair.input)[0], CATALOG).sql("duckdb")
    assert rewritten == pair.expected
    assert _answer(pair.input, []) == _answer(rewritten, [])


DDL = load_pairs("rewrite_encrypted_ddl.sql")


@pytest.mark.parametrize("pair", DDL, ids=_ids(DDL))
def test_rewrite_encrypted_ddl(pair: Pair) -> None:
    plan = describe(parse_statements(pair.input)[0], CATALOG, enclave_available=False)
    assert plan.kind == "ddl"
    assert plan.sql == pair.expected
    plaintext_db().execute(plan.sql)  # the rewritten DDL is valid DuckDB


PARAMETERIZE = load_pairs("parameterize_literals.sql")


@pytest.mark.parametrize("pair", PARAMETERIZE, ids=_ids(PARAMETERIZE))
def test_parameterize_literals(pair: Pair) -> None:
    plan = describe(parse_statements(pair.input)[0], CATALOG, enclave_available=False)
    assert plan.sql == pair.expected
    got = [
        (kind, value, spec.target.label if spec.target else None)
        for spec in plan.parameters
        for kind, value in [spec.source]
    ]
    assert got == pair.directives["params"]
    args = pair.directives.get("args", [])
    assert plan.user_parameter_count == len(args)
    bound = [value if kind == "literal" else args[value] for kind, value, _ in got]
    assert plan.sql is not None
    assert _answer(pair.input, args) == _answer(plan.sql, bound)


DESCRIBE_TABLE = load_pairs("rewrite_describe_table.sql")


@pytest.mark.parametrize("pair", DESCRIBE_TABLE, ids=_ids(DESCRIBE_TABLE))
def test_rewrite_describe_table(pair: Pair) -> None:
    plan = describe(parse_statements(pair.input)[0], CATALOG, enclave_available=False)
    assert plan.sql == pair.expected
    # DuckDB stores the encrypted columns as BLOB; the rewritten DESCRIBE must list every column
    # in table order, with the catalog's declared type for the encrypted ones.
    table = CATALOG.table(parse_statements(pair.input)[0].this.name)
    connection = plaintext_db()
    for column in table.columns:
        if column.encryption is not None:
            connection.execute(
                f"ALTER TABLE {table.name} ALTER COLUMN {column.name} SET DATA TYPE BLOB"
            )
    rows = connection.execute(plan.sql).fetchall()
    assert [row[0] for row in rows] == [column.name for column in table.columns]
    for row, column in zip(rows, table.columns, strict=True):
        if column.encryption is not None:
            assert row[1] == column.declared_type
        else:
            assert row[1] != "BLOB"

"""sqlglot's own warnings quote the statement text, literals included (its Command fallback for
EXPLAIN and other statements it does not model): none of that may reach a log handler while the
engine parses or generates SQL, or a literal aimed at an encrypted column would land in logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine.sql.dialect import parse_statements
from tests.support.keys import CEK1_KEYS, make_cmk

CANARY = "987-65-4321-canary"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.args!r}")


@pytest.fixture()
def every_record() -> Iterator[_Collect]:
    handler = _Collect()
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def test_sqlglot_would_quote_the_statement_outside_the_engine(every_record: _Collect) -> None:
    # The premise: sqlglot itself logs the whole statement when it falls back to a Command.
    import sqlglot

    sqlglot.parse(f"EXPLAIN SELECT 1 WHERE x = '{CANARY}'", read="duckdb")
    assert any(CANARY in line for line in every_record.lines)


def test_the_engine_parser_lets_no_sqlglot_record_through(every_record: _Collect) -> None:
    statements = parse_statements(f"EXPLAIN SELECT name FROM patients WHERE ssn = '{CANARY}'")
    assert len(statements) == 1
    assert not any(CANARY in line for line in every_record.lines)


def test_explain_through_a_connection_logs_no_literal(
    tmp_path: Path, every_record: _Collect
) -> None:
    make_cmk(tmp_path)
    with engine.connect(str(tmp_path / "db.duckdb"), key_dir=str(tmp_path)) as con:
        cur = con.cursor()
        for statement in CEK1_KEYS:
            cur.execute(statement)
        cur.execute(
            "CREATE TABLE p (name VARCHAR, ssn VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = "
            "cek1, ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
        )
        cur.execute(f"EXPLAIN SELECT name FROM p WHERE ssn = '{CANARY}'")
        assert cur.fetchall()
    assert every_record.lines  # the engine's own loggers did speak
    assert not any(CANARY in line for line in every_record.lines)

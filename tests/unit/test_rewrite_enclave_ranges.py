"""rewrite_enclave_ranges: the fixture pairs (tests/sql/fixtures/rewrite_enclave_ranges.sql) pin
the text, and plaintext DuckDB must give the input's answer for the rewritten text. Through the
real enclave the answers are compared in tests/sql/enclave_ranges.test.
"""

from __future__ import annotations

import pytest

from engine.sql import parse_statements
from engine.sql.qualify_columns import qualify_columns
from engine.sql.resolve_columns import resolve_columns
from engine.sql.result_names import mark_result_names
from engine.sql.rewrite_enclave_ranges import rewrite_enclave_ranges
from tests.sql.fixtures.catalog import CATALOG
from tests.unit.test_sql_fixtures import Pair, _answer, _ids, load_pairs

RANGES = load_pairs("rewrite_enclave_ranges.sql")
# The ? of the one fixture that has one.
ARGUMENTS = ["1985-01-01"]


def _rewrite(sql: str) -> str:
    tree = resolve_columns(
        qualify_columns(mark_result_names(parse_statements(sql)[0]), CATALOG), CATALOG
    )
    return rewrite_enclave_ranges(tree, CATALOG).sql("duckdb")


@pytest.mark.parametrize("pair", RANGES, ids=_ids(RANGES))
def test_rewrite_enclave_ranges(pair: Pair) -> None:
    rewritten = _rewrite(pair.input)
    assert rewritten == pair.expected
    arguments = ARGUMENTS[: pair.input.count("?")]
    assert _answer(pair.input, arguments) == _answer(rewritten, arguments)


def test_the_oracle_can_tell_a_wrong_merge() -> None:
    # Dropping the NOT-equal test of a strict bound changes the answer on the fixture rows
    # (dob = 1990-01-01 is row 1), so the equivalence check above has teeth.
    wrong = "SELECT id FROM patients WHERE dob BETWEEN DATE '1985-01-01' AND DATE '1990-01-01'"
    right = "SELECT id FROM patients WHERE dob >= DATE '1985-01-01' AND dob < DATE '1990-01-01'"
    assert _answer(wrong, []) != _answer(right, [])

"""docs/sql.md stays true: every public name of engine.sql is documented, every SQL example
parses, and the error examples in the doc are messages the code really produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import engine.sql
from engine.errors import NotSupportedError, ProgrammingError
from engine.sql import describe, parse_statements
from tests.sql.fixtures.catalog import CATALOG

DOC = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text()


@pytest.mark.parametrize("name", engine.sql.__all__)
def test_every_public_name_is_documented(name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", DOC), f"docs/sql.md does not mention {name}"


SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", DOC, flags=re.S)


@pytest.mark.parametrize("block", SQL_BLOCKS)
def test_every_sql_example_parses(block: str) -> None:
    assert parse_statements(block)


@pytest.mark.parametrize(
    ("sql", "error", "enclave", "full"),
    [
        ("SELECT id FROM patients WHERE ssn < 'a'", ProgrammingError, False, True),
        ("SELECT id FROM patients WHERE salary < 1", ProgrammingError, False, True),
        ("SELECT id FROM patients WHERE dob > DATE '2000-01-01'", ProgrammingError, False, True),
        (
            "SELECT id FROM patients WHERE dob ILIKE '1990%'",
            NotSupportedError,
            True,
            False,
        ),
        ("SELECT upper(ssn) FROM patients", NotSupportedError, False, False),
        ("SELECT id FROM patients WHERE ssn = name", ProgrammingError, False, False),
    ],
)
def test_documented_messages_match_the_code(
    sql: str, error: type[Exception], enclave: bool, full: bool
) -> None:
    with pytest.raises(error) as caught:
        describe(parse_statements(sql)[0], CATALOG, enclave_available=enclave)
    message = str(caught.value)
    # Short messages are quoted whole; long ones up to their first ";" and an ellipsis.
    assert (message if full else message.split(";")[0]) in DOC

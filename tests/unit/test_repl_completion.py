"""Tab completion: dot commands, keywords, and catalog tables and columns (encrypted included)."""

from __future__ import annotations

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from engine.repl.commands import COMMANDS
from engine.repl.completion import KEYWORDS, SqlCompleter
from engine.sql.catalog import CatalogSnapshot, ColumnInfo, Encryption, TableInfo

CATALOG = CatalogSnapshot(
    0,
    tables=(
        TableInfo(
            "patients",
            (
                ColumnInfo("id", "INTEGER"),
                ColumnInfo("ssn", "CHAR(11)", Encryption("CEK1", "DETERMINISTIC")),
                ColumnInfo("name", "VARCHAR"),
            ),
        ),
        TableInfo("payments", (ColumnInfo("patient_id", "INTEGER"),)),
    ),
)


def complete(text: str, catalog: object = CATALOG) -> list[tuple[str, str]]:
    def read() -> CatalogSnapshot:
        if isinstance(catalog, Exception):
            raise catalog
        return catalog  # type: ignore[return-value]

    found = SqlCompleter(read).get_completions(Document(text), CompleteEvent())
    return [(item.text, item.display_meta_text) for item in found]


def test_dot_commands_complete_at_the_start_of_input() -> None:
    assert [text for text, _ in complete(".")] == ["." + name for name in COMMANDS]
    assert complete(".ex") == [
        (".explain", COMMANDS["explain"].summary),
        (".exit", COMMANDS["exit"].summary),
    ]


def test_tables_come_first_after_from() -> None:
    assert complete("SELECT * FROM pa")[:3] == [
        ("patients", "table"),
        ("payments", "table"),
        ("patient_id", "column of payments"),
    ]


def test_columns_come_first_elsewhere_and_encrypted_ones_are_marked() -> None:
    assert complete("SELECT ss") == [("ssn", "encrypted column of patients")]
    assert complete("SELECT pa")[0] == ("patient_id", "column of payments")


def test_keywords_follow_the_case_typed() -> None:
    assert ("SELECT", "keyword") in complete("SEL")
    assert ("select", "keyword") in complete("sel")
    assert "ENCRYPTED" in KEYWORDS and "DETERMINISTIC" in KEYWORDS


def test_a_catalog_that_cannot_be_read_leaves_keywords() -> None:
    assert complete("SEL", RuntimeError("closed")) == [("SELECT", "keyword")]


def test_nothing_to_complete_after_a_space() -> None:
    assert complete("SELECT ") == []

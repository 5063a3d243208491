"""Output modes of the shell: exact table, csv, json and markdown text."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import decimal
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.repl.formatting import (
    ResultSet,
    format_cell,
    hex_preview,
    render,
    render_value,
    status_line,
)

PEOPLE = ResultSet(
    ("id", "name", "ssn"), [(1, "Ann", "123"), (22, None, None)], (False, False, True)
)


def test_table_mode_draws_an_aligned_box_with_marks_and_a_footer() -> None:
    assert render(PEOPLE, "table") == (
        "┌────┬──────┬──────┐\n"
        "│ id │ name │ ssn* │\n"
        "├────┼──────┼──────┤\n"
        "│  1 │ Ann  │ 123  │\n"
        "│ 22 │ NULL │ NULL │\n"
        "└────┴──────┴──────┘\n"
        "2 rows  (* encrypted column)\n"
    )


def test_table_mode_reports_rows_left_out() -> None:
    result = ResultSet(("n",), [(1,), (2,)], more_rows=98)
    text = render(result, "table")
    assert text.endswith("└───┘\n… 98 more rows\n100 rows\n")


def test_table_mode_cuts_long_values_and_escapes_newlines() -> None:
    text = render(ResultSet(("t",), [("x" * 100,), ("a\nb",)]), "table")
    assert "x" * 59 + "…" in text
    assert "x" * 60 not in text
    assert "a\\nb" in text


def test_table_mode_measures_wide_characters() -> None:
    lines = render(ResultSet(("name",), [("日本",), ("ab",)]), "table").splitlines()
    # Every line of the box is equally wide on screen: 日本 takes four columns.
    assert lines[3] == "│ 日本 │"
    assert lines[4] == "│ ab   │"


def test_csv_mode_is_exact() -> None:
    result = ResultSet(("a", "b"), [(1, 'say "hi", then go'), (None, True), (2.5, b"\x01\xff")])
    assert render(result, "csv") == 'a,b\n1,"say ""hi"", then go"\n,true\n2.5,0x01FF\n'


def test_json_mode_is_exact() -> None:
    result = ResultSet(
        ("n", "d", "when", "blob", "flag", "empty"),
        [
            (
                1,
                decimal.Decimal("12.50"),
                datetime.date(2024, 2, 29),
                b"\xab",
                False,
                None,
            ),
            (2, None, datetime.datetime(2024, 1, 2, 3, 4, 5), None, True, "Zoë"),
        ],
    )
    assert render(result, "json") == (
        '[{"n": 1, "d": "12.50", "when": "2024-02-29", "blob": "0xAB", "flag": false, '
        '"empty": null},\n'
        '{"n": 2, "d": null, "when": "2024-01-02T03:04:05", "blob": null, "flag": true, '
        '"empty": "Zoë"}]\n'
    )


def test_json_mode_of_no_rows_is_an_empty_list() -> None:
    assert render(ResultSet(("a",), []), "json") == "[]\n"


def test_markdown_mode_is_exact() -> None:
    result = ResultSet(("a", "b|c"), [(1, "x|y"), (None, "two\nlines")])
    assert render(result, "markdown") == (
        "| a | b\\|c |\n| --- | --- |\n| 1 | x\\|y |\n| NULL | two<br>lines |\n"
    )


def test_export_modes_are_never_shortened_or_marked() -> None:
    result = ResultSet(("s",), [(i,) for i in range(3)], encrypted=(True,), more_rows=0)
    assert render(result, "csv") == "s\n0\n1\n2\n"
    assert render(result, "markdown").startswith("| s |")


def test_binary_is_shown_as_truncated_hex_in_table_mode() -> None:
    text = render(ResultSet(("c",), [(bytes(range(40)),)]), "table")
    assert "0x000102030405060708090A0B0C0D0E0F…" in text
    assert "10111213" not in text


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of table, csv, json, markdown"):
        render(PEOPLE, "html")


def test_small_helpers() -> None:
    assert hex_preview(b"\x00\x10") == "0x0010"
    assert format_cell(None, null="") == ""
    assert status_line(0) == "0 rows affected"


_CELL = st.one_of(st.none(), st.integers(), st.text(max_size=10))


@given(st.lists(st.tuples(_CELL, _CELL), max_size=6))
def test_csv_reads_back(rows: list[tuple[object, object]]) -> None:
    text = render(ResultSet(("a", "b"), rows), "csv")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    expected = [["a", "b"]] + [["" if v is None else str(v) for v in row] for row in rows]
    assert parsed == expected


@given(st.lists(st.tuples(_CELL, _CELL), max_size=6))
def test_json_reads_back(rows: list[tuple[object, object]]) -> None:
    text = render(ResultSet(("a", "b"), rows), "json")
    assert json.loads(text) == [{"a": a, "b": b} for a, b in rows]


def test_render_value_of_extension_answers() -> None:
    @dataclasses.dataclass
    class Summary:
        protocol: str
        svn: int
        expires_at: datetime.datetime | None

    summary = Summary("service", 2, datetime.datetime(2030, 1, 2, 3, 4, 5))
    assert render_value(summary) == (
        "protocol    service\nsvn         2\nexpires_at  2030-01-02 03:04:05\n"
    )
    assert render_value("line") == "line\n"
    assert render_value([{"operation": "ssn = ?", "runs_in": "enclave"}]) == (
        "┌───────────┬─────────┐\n"
        "│ operation │ runs_in │\n"
        "├───────────┼─────────┤\n"
        "│ ssn = ?   │ enclave │\n"
        "└───────────┴─────────┘\n"
        "1 row\n"
    )
    assert render_value(["a", None]) == "a\nNULL\n"

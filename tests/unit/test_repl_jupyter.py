"""The `%esql` magic in-process: `{name}` binding, SQL-or-database detection, and the rich frame.

The kernel-level test is tests/e2e/test_jupyter_magic.py; here IPython runs inside pytest against
the plain-DuckDB stand-in, so no keys or kernels are needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from engine.errors import ProgrammingError

pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from engine.jupyter import LOCK, ResultFrame, bind_variables, is_sql  # noqa: E402

NAMESPACE = {"x": 5, "name": "O'Brien", "limit": 3}


@pytest.mark.parametrize(
    ("sql", "text", "values"),
    [
        ("SELECT {x}", "SELECT ?", [5]),
        ("SELECT * FROM t WHERE n = {name}", "SELECT * FROM t WHERE n = ?", ["O'Brien"]),
        ("SELECT {x}, {x}::INT, {limit}", "SELECT ?, ?::INT, ?", [5, 5, 3]),
        ("SELECT '{x}'", "SELECT '{x}'", []),
        ("SELECT 'a{' || {x}", "SELECT 'a{' || ?", [5]),
        ('SELECT "{x}" FROM t', 'SELECT "{x}" FROM t', []),
        ("SELECT 1 -- {x}", "SELECT 1 -- {x}", []),
        ("SELECT /* {x} */ 1", "SELECT /* {x} */ 1", []),
        ("SELECT {'x': 1}", "SELECT {'x': 1}", []),
        ("SELECT {x: 1}", "SELECT {x: 1}", []),
        ("SELECT { x }", "SELECT { x }", []),
        ("SELECT 'open {x}", "SELECT 'open {x}", []),
    ],
)
def test_bind_variables(sql: str, text: str, values: list[Any]) -> None:
    assert bind_variables(sql, NAMESPACE) == (text, values)


def test_an_unknown_name_is_refused_without_its_value() -> None:
    with pytest.raises(ProgrammingError, match=r"\{missing\} names no variable"):
        bind_variables("SELECT {missing}", NAMESPACE)


@pytest.mark.parametrize(
    ("line", "sql"),
    [
        ("SELECT 1", True),
        ("select 1", True),
        ("WITH a AS (SELECT 1) SELECT * FROM a", True),
        ("INSERT INTO t VALUES (1)", True),
        ("shop.duckdb --key-dir keys", False),
        (":memory:", False),
        ("/tmp/select.db", False),
    ],
)
def test_is_sql(line: str, sql: bool) -> None:
    assert is_sql(line) is sql


def _frame(rows: int, encrypted: list[str]) -> ResultFrame:
    frame = ResultFrame(
        pd.DataFrame({"id": list(range(rows)), "ssn": ["<b>&x</b>"] * rows, "note": [None] * rows})
    )
    frame.encrypted_columns = encrypted
    frame.display_rows = 2
    frame.query_location = None
    return frame


def test_html_marks_encrypted_columns_and_escapes_values() -> None:
    html = _frame(1, ["ssn"])._repr_html_()
    assert f'<th>ssn <span title="encrypted column">{LOCK}</span></th>' in html
    assert "<th>id</th>" in html and "<th>note</th>" in html
    assert "<td>&lt;b&gt;&amp;x&lt;/b&gt;</td>" in html
    assert "<td>NULL</td>" in html
    assert "1 row · " in html
    assert "where it ran" not in html


def test_html_truncates_long_results_with_a_count() -> None:
    html = _frame(5, [])._repr_html_()
    assert html.count("<tr>") == 3  # the header row and two data rows
    assert "5 rows · … 3 more rows not shown" in html
    assert LOCK not in html


def test_html_says_where_the_query_ran() -> None:
    frame = _frame(1, [])
    frame.query_location = "ssn = ?: deterministic ciphertext in DuckDB"
    assert "<pre>ssn = ?: deterministic ciphertext in DuckDB</pre>" in frame._repr_html_()


def test_derived_frames_are_plain_dataframes() -> None:
    frame = _frame(3, ["ssn"])
    assert type(frame.head(1)) is pd.DataFrame
    assert type(frame[frame["id"] > 0]) is pd.DataFrame
    assert frame["id"].sum() == 3


@pytest.fixture
def ipython() -> Iterator[InteractiveShell]:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "engine.jupyter")
    shell.run_line_magic("esql", ":memory: --connect tests.support.repl_adapter:connect")
    yield shell
    InteractiveShell.clear_instance()


def test_magic_runs_sql_with_parameters(ipython: InteractiveShell) -> None:
    ipython.run_cell_magic(
        "esql",
        "",
        "CREATE TABLE t (a INTEGER, b VARCHAR);\nINSERT INTO t VALUES (1, 'x'), (2, 'y');",
    )
    ipython.user_ns["wanted"] = 2
    frame = ipython.run_line_magic("esql", "SELECT b, '{wanted}' AS s FROM t WHERE a = {wanted}")
    assert isinstance(frame, ResultFrame)
    assert frame.to_dict("records") == [{"b": "y", "s": "{wanted}"}]
    assert frame.encrypted_columns == []
    cell = ipython.run_cell_magic("esql", "", "SELECT count(*) AS n FROM t WHERE a < {wanted}")
    assert cell.to_dict("records") == [{"n": 1}]


def test_magic_without_a_connection_says_how_to_open_one() -> None:
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "engine.jupyter")
        with pytest.raises(UsageError, match="open one first with %esql DATABASE"):
            shell.run_line_magic("esql", "SELECT 1")
    finally:
        InteractiveShell.clear_instance()


def test_magic_reports_bad_options(ipython: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="usage: %esql DATABASE"):
        ipython.run_line_magic("esql", "db --mode nonsense")


def test_magic_help_prints_the_options(
    ipython: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ipython.run_line_magic("esql", "--help") is None
    assert "--no-decrypt" in capsys.readouterr().out

"""Statement splitting of the shell: `;` ends a statement only when it is a token of its own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.repl.statements import Split, is_complete, split_statements


@pytest.mark.parametrize(
    ("text", "statements", "remainder"),
    [
        ("SELECT 1;", ("SELECT 1",), ""),
        ("SELECT 1; SELECT 2;", ("SELECT 1", "SELECT 2"), ""),
        ("SELECT 'a;b';", ("SELECT 'a;b'",), ""),
        ("SELECT 'it''s; fine';", ("SELECT 'it''s; fine'",), ""),
        ('SELECT "odd;name" FROM t;', ('SELECT "odd;name" FROM t',), ""),
        ("SELECT $$x;y$$;", ("SELECT $$x;y$$",), ""),
        ("SELECT 1 -- not; the end\n;", ("SELECT 1 -- not; the end",), ""),
        ("SELECT /* a; b */ 1;", ("SELECT /* a; b */ 1",), ""),
        ("SELECT 1;;  ;", ("SELECT 1",), ""),
        ("SELECT 1; SELECT", ("SELECT 1",), "SELECT"),
        ("SELECT\n  1\n", (), "SELECT\n  1"),
        ("SELECT 1; -- trailing comment only", ("SELECT 1",), ""),
        ("SELECT 'open;", (), "SELECT 'open;"),
        ("SELECT 1 /* open; comment", (), "SELECT 1 /* open; comment"),
        ("", (), ""),
    ],
)
def test_split_statements(text: str, statements: tuple[str, ...], remainder: str) -> None:
    assert split_statements(text) == Split(statements, remainder)


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("SELECT 1;", True),
        ("SELECT 1", False),
        ("SELECT ';'", False),
        ("SELECT 1;\nSELECT", False),
        ("-- only a comment;", False),
        ("SELECT 1; -- done", True),
    ],
)
def test_is_complete(text: str, complete: bool) -> None:
    assert is_complete(text) is complete


# String contents that are full of statement and comment syntax.
_CONTENT = st.text(alphabet="ab ;'-/*$\"\n", max_size=12)


@given(st.lists(_CONTENT, min_size=1, max_size=5))
def test_split_recovers_statements_with_tricky_strings(contents: list[str]) -> None:
    statements = ["SELECT '" + content.replace("'", "''") + "' AS v" for content in contents]
    text = ";\n".join(statements) + ";"
    assert split_statements(text) == Split(tuple(statements), "")


@given(_CONTENT)
def test_an_open_string_is_never_split(content: str) -> None:
    text = "SELECT '" + content.replace("'", "''")
    split = split_statements(text)
    assert split.statements == ()
    assert split.remainder == text.strip()

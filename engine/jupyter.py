"""The `%esql` / `%%esql` IPython magics: connect with the shell's options, run SQL with `{name}`
placeholders bound as `?` parameters, and return a DataFrame whose HTML view marks encrypted
columns, shortens long results and says where the query ran.

Python values are only ever bound as parameters, never pasted into SQL text; the magic must not
read keys or open DuckDB itself (the connection does both).
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Mapping
from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)
from sqlglot.tokenizer_core import TokenType

from engine.errors import ProgrammingError
from engine.repl.formatting import format_cell, render_value
from engine.repl.introspection import encrypted_flags, read_catalog
from engine.repl.options import DEFAULT_MAX_ROWS, build_parser, open_connection
from engine.repl.statements import split_statements, tokenize
from engine.sql.catalog import CatalogSnapshot

__all__ = [
    "LOCK",
    "EnclaveSqlMagics",
    "ResultFrame",
    "bind_variables",
    "is_sql",
    "load_ipython_extension",
    "unload_ipython_extension",
]

LOCK = "\N{LOCK}"

# A line whose first word is one of these runs as SQL; anything else names a database to open.
_STATEMENT_WORDS = frozenset(
    """SELECT WITH FROM VALUES TABLE INSERT UPDATE DELETE MERGE CREATE DROP ALTER TRUNCATE
    SHOW DESCRIBE SUMMARIZE EXPLAIN PRAGMA SET RESET BEGIN COMMIT ROLLBACK CHECKPOINT COPY
    EXPORT IMPORT ATTACH DETACH USE CALL PIVOT UNPIVOT""".split()
)


def is_sql(line: str) -> bool:
    """Whether a `%esql` line is SQL (True) or a database to connect to (False).

    >>> is_sql("SELECT 1"), is_sql("  with t as (select 1) select * from t"), is_sql("shop.db")
    (True, True, False)
    """
    words = line.split(None, 1)
    return bool(words) and words[0].upper().rstrip(";") in _STATEMENT_WORDS


def bind_variables(sql: str, namespace: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Replace each `{name}` with `?` and return the values to bind, in order.

    Only a brace pair around a bare name, outside strings, quoted names and comments, counts;
    DuckDB struct literals such as `{'a': 1}` and a `{` inside a string stay as they are.

    >>> bind_variables("SELECT * FROM t WHERE a = {x} AND b = '{x}'", {"x": 5})
    ("SELECT * FROM t WHERE a = ? AND b = '{x}'", [5])
    >>> bind_variables("SELECT {y}", {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: {y} names no variable in the notebook; define y first, ...
    """
    tokens = tokenize(sql)
    if tokens is None:
        # An unterminated string or comment: the connection reports the syntax error.
        return sql, []
    pieces: list[str] = []
    values: list[Any] = []
    position = 0
    index = 0
    while index + 2 < len(tokens):
        left, name, right = tokens[index : index + 3]
        bare = sql[name.start : name.end + 1] == name.text and name.text.isidentifier()
        if (
            left.token_type == TokenType.L_BRACE
            and right.token_type == TokenType.R_BRACE
            and bare
            and left.end + 1 == name.start
            and name.end + 1 == right.start
        ):
            if name.text not in namespace:
                raise ProgrammingError(
                    f"{{{name.text}}} names no variable in the notebook; define {name.text} "
                    "first, or write the braces inside a string"
                )
            pieces.append(sql[position : left.start])
            pieces.append("?")
            values.append(namespace[name.text])
            position = right.end + 1
            index += 3
        else:
            index += 1
    pieces.append(sql[position:])
    return "".join(pieces), values


class ResultFrame(pd.DataFrame):  # type: ignore[misc]  # pandas ships no stubs here
    """A query result: a plain pandas DataFrame with a richer HTML view.

    Frames derived from it (``head()``, arithmetic, filters) are ordinary DataFrames, because
    the encryption marks describe this query's columns only.
    """

    _metadata = ["encrypted_columns", "query_location", "display_rows"]

    @property
    def _constructor(self) -> Any:
        return pd.DataFrame

    def _repr_html_(self) -> str:
        encrypted = set(getattr(self, "encrypted_columns", ()) or ())
        limit = getattr(self, "display_rows", None) or DEFAULT_MAX_ROWS
        header = "".join(
            f"<th>{html.escape(str(name))}"
            + (f' <span title="encrypted column">{LOCK}</span>' if name in encrypted else "")
            + "</th>"
            for name in self.columns
        )
        body = []
        for row in self.head(limit).itertuples(index=False, name=None):
            cells = "".join(f"<td>{html.escape(_html_value(value))}</td>" for value in row)
            body.append(f"<tr>{cells}</tr>")
        total = len(self)
        notes = [f"{total} row" + ("" if total == 1 else "s")]
        if total > limit:
            notes.append(f"… {total - limit} more rows not shown")
        if encrypted:
            notes.append(f"{LOCK} encrypted column")
        footer = " · ".join(html.escape(note) for note in notes)
        location = getattr(self, "query_location", None)
        where = (
            f"<details><summary>where it ran</summary><pre>{html.escape(location)}</pre></details>"
            if location
            else ""
        )
        return (
            '<div class="enclavesql-result"><table class="dataframe">'
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p>{footer}</p>{where}</div>"
        )


def _html_value(value: Any) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "NULL"
    return format_cell(value, binary_limit=16)


def _frame(cursor: Any) -> pd.DataFrame:
    fetch_arrow = getattr(cursor, "fetch_arrow_table", None)
    if fetch_arrow is not None:
        try:
            return fetch_arrow().to_pandas()
        except (AttributeError, NotImplementedError):
            pass
    columns = [str(column[0]) for column in cursor.description]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def _location(connection: Any, sql: str) -> str | None:
    explain = getattr(connection, "explain", None)
    if explain is None:
        return None
    try:
        return render_value(explain(sql)).rstrip("\n")
    except Exception:  # noqa: BLE001 - the explanation is a nicety; the query already ran
        return None


@magics_class
class EnclaveSqlMagics(Magics):
    """`%esql DATABASE [options]` connects; `%esql SQL` and `%%esql` cells run SQL."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.connection: Any = None
        self.max_rows = DEFAULT_MAX_ROWS

    def _connect(self, line: str) -> None:
        parser = build_parser(prog="%esql")
        try:
            options = parser.parse_args(shlex.split(line))
        except SystemExit as stop:
            if stop.code == 0:  # --help or --version printed what was asked for
                return
            raise UsageError("usage: %esql DATABASE [options]; see %esql --help") from None
        connection = open_connection(options)
        if self.connection is not None:
            self.connection.close()
        self.connection = connection
        self.max_rows = options.max_rows

    def _run(self, sql: str, namespace: Mapping[str, Any]) -> ResultFrame | None:
        if self.connection is None:
            raise UsageError("no connection; open one first with %esql DATABASE [options]")
        split = split_statements(sql)
        statements = [*split.statements, *([split.remainder] if split.remainder else [])]
        result: ResultFrame | None = None
        catalog: CatalogSnapshot | None = None

        def read() -> CatalogSnapshot:
            nonlocal catalog
            if catalog is None:
                catalog = read_catalog(self.connection)
            return catalog

        for statement in statements:
            text, values = bind_variables(statement, namespace)
            cursor = self.connection.cursor()
            try:
                cursor.execute(text, values)
                if not cursor.description:
                    result = None
                    continue
                flags = encrypted_flags(cursor, read, text)
                names = [str(column[0]) for column in cursor.description]
                result = ResultFrame(_frame(cursor))
            finally:
                cursor.close()
            result.encrypted_columns = [n for n, f in zip(names, flags, strict=True) if f]
            result.display_rows = self.max_rows
            result.query_location = _location(self.connection, text)
        commit = getattr(self.connection, "commit", None)
        if commit is not None:
            commit()
        return result

    # IPython would paste {name} and $name into the line as text; binding is ours to do.
    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def esql(self, line: str, cell: str | None = None, local_ns: Any = None) -> Any:
        """Connect (`%esql DATABASE [options]`) or run SQL (`%esql SQL`, `%%esql`)."""
        user_namespace = self.shell.user_ns if self.shell is not None else {}
        namespace = {**user_namespace, **(local_ns or {})}
        if cell is None:
            if not line.strip():
                raise UsageError("usage: %esql DATABASE [options], or %esql SQL")
            if is_sql(line):
                return self._run(line, namespace)
            self._connect(line)
            return None
        if line.strip():
            self._connect(line)
        return self._run(cell, namespace)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext engine.jupyter`: register the magics."""
    ipython.register_magics(EnclaveSqlMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo beyond what IPython does; present so `%unload_ext` works."""

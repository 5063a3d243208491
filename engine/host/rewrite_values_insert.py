"""Rewrite rule for executemany: ``INSERT … VALUES (?, …)`` becomes ``INSERT … SELECT … FROM
<view>``, so a whole batch of parameter rows is inserted by one Arrow scan instead of row by row.

It is a pure text-to-text function; it returns None when the statement has another shape and
must not execute anything.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

__all__ = ["parameter_column", "rewrite_values_insert"]


def parameter_column(index: int) -> str:
    """The name of the view column that carries the values of the ``index``-th ``?``."""
    return f"p{index}"


def rewrite_values_insert(sql: str, view: str) -> str | None:
    """``sql`` with its single VALUES row read from ``view`` (column ``p<j>`` for the j-th ?).

    >>> rewrite_values_insert("INSERT INTO t (a, b) VALUES (?, 3)", "batch")
    'INSERT INTO t (a, b) SELECT batch.p0, 3 FROM batch'
    >>> rewrite_values_insert("UPDATE t SET a = ?", "batch") is None
    True
    """
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0], exp.Insert):
        return None
    insert = statements[0]
    values = insert.expression
    if not isinstance(values, exp.Values) or len(values.expressions) != 1:
        return None
    row = values.expressions[0]
    if not isinstance(row, exp.Tuple):
        return None
    placeholders = list(row.find_all(exp.Placeholder))
    if any(p.this is not None for p in placeholders):
        return None
    if len(placeholders) != sql.count("?"):
        return None  # a ? outside the VALUES row (ON CONFLICT … WHERE ?) needs the row loop
    # Text order and tree order agree inside one VALUES row, left to right.
    row = row.copy()
    for index, placeholder in enumerate(list(row.find_all(exp.Placeholder))):
        placeholder.replace(exp.column(parameter_column(index), table=view))
    select = exp.select(*row.expressions).from_(view)
    insert = insert.copy()
    insert.set("expression", select)
    return insert.sql(dialect="duckdb")

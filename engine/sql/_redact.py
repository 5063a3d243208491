"""Keeps literal values out of error messages built from sqlglot errors or generated SQL.

It only rewrites message text; it must not decide whether an error is raised.
"""

from __future__ import annotations

from sqlglot import exp

__all__ = ["redact_literals"]


def redact_literals(message: str, expression: exp.Expr) -> str:
    """Replace every literal of ``expression`` that appears in ``message`` by ``<literal>``.

    >>> from sqlglot import parse_one
    >>> redact_literals("bad value 'hunter2'", parse_one("SELECT 'hunter2'"))
    "bad value '<literal>'"
    """
    values = sorted(
        {str(node.this) for node in expression.find_all(exp.Literal, exp.National) if node.this},
        key=len,
        reverse=True,
    )
    for value in values:
        message = message.replace(value, "<literal>")
    return message

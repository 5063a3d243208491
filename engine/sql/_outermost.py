"""Finds the top-level queries of a statement, the ones no other query encloses.

Rules that treat a DML statement's own subqueries as separate scopes share it. It only reads the
tree; it must not change it.
"""

from __future__ import annotations

from sqlglot import exp

__all__ = ["outermost_queries"]


def outermost_queries(expression: exp.Expr) -> list[exp.Query]:
    """Every query in ``expression`` that has no query above it, in tree order.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("DELETE FROM t WHERE a IN (SELECT b FROM (SELECT b FROM u) AS s)")
    >>> [q.sql() for q in outermost_queries(tree)]
    ['(SELECT b FROM (SELECT b FROM u) AS s)']
    """
    return [q for q in expression.find_all(exp.Query) if _outermost(q)]


def _outermost(query: exp.Expr) -> bool:
    parent = query.parent
    while parent is not None:
        if isinstance(parent, exp.Query):
            return False
        parent = parent.parent
    return True

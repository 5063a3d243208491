"""What the two enclave grouping rewrites share: the refusal they raise and the DISTINCT-to-GROUP
BY step, used by rewrite_enclave_grouping (the outermost SELECT) and rewrite_enclave_nested_grouping
(subqueries, CTEs, set operation branches). It must NOT decide where a rewrite applies or plan any
enclave call; it only reshapes one SELECT or builds an error."""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.plan import EncryptionTarget

__all__ = ["distinct_to_group", "refuse_in_enclave"]


def refuse_in_enclave(target: EncryptionTarget, construct: str, why: str) -> NotSupportedError:
    """The error for a ``construct`` the enclave cannot run on ``target``'s column.

    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> str(refuse_in_enclave(target, "DISTINCT ON", "is not supported")).endswith(
    ...     "DISTINCT ON in the enclave is not supported")
    True
    """
    return NotSupportedError(f"{target.label}: {construct} in the enclave {why}")


def distinct_to_group(select: exp.Select, target: EncryptionTarget) -> None:
    """SELECT DISTINCT a, b ... becomes SELECT a, b ... GROUP BY a, b, in place; refused (with
    ``target`` named) when the SELECT also groups or aggregates, uses DISTINCT ON, or lists
    anything but plain columns.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT DISTINCT x, y FROM t", read="duckdb")
    >>> distinct_to_group(tree, EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER"))
    >>> tree.sql("duckdb")
    'SELECT x, y FROM t GROUP BY x, y'
    """
    if select.args.get("group") is not None or any(
        p.find(exp.AggFunc) is not None for p in select.selects
    ):
        raise refuse_in_enclave(
            target, "DISTINCT", "cannot be combined with GROUP BY or aggregates"
        )
    if select.args["distinct"].args.get("on") is not None:
        raise refuse_in_enclave(target, "DISTINCT ON", "is not supported")
    keys = []
    for projection in select.selects:
        column = projection.unalias()
        if not isinstance(column, exp.Column):
            raise refuse_in_enclave(target, "DISTINCT", "needs plain columns in the SELECT list")
        keys.append(column.copy())
    select.set("distinct", None)
    select.set("group", exp.Group(expressions=keys))

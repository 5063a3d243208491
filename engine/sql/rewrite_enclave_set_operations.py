"""Rewrite rule: UNION, INTERSECT and EXCEPT (distinct) whose output has RANDOMIZED enclave
columns become one grouped SELECT over the branches' UNION ALL.

``a UNION b`` is ``SELECT DISTINCT * FROM (a UNION ALL b)``; INTERSECT and EXCEPT also tag each
branch's rows with its side and keep the groups found on both sides, or on the left only. The
grouping rule then groups on group ids that one enclave call gives over every branch's cells, so
equal values of different branches get equal ids. It must not compare ciphertext itself, and
refuses (NotSupportedError) the forms it cannot express this way before anything runs.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.plan import EncryptionTarget
from engine.sql.resolve_columns import DECLARED, TARGET, origin

__all__ = ["SET_OPERATION", "SET_VIEW", "rewrite_enclave_set_operations"]

SET_VIEW = "__ee_set"
# Root meta of the grouped SELECT: the set operation it stands for (UNION, INTERSECT, EXCEPT).
SET_OPERATION = "ae_enclave_set_operation"
_SIDE = "__ee_side"


def _refuse(target: EncryptionTarget, construct: str, why: str) -> NotSupportedError:
    return NotSupportedError(f"{target.label}: {construct} over an enclave column {why}")


def _name(node: exp.SetOperation) -> str:
    return type(node).__name__.upper()


def _ancestors(node: exp.Expr, root: exp.Expr) -> list[exp.Expr]:
    """The nodes strictly between ``node`` and ``root`` (Subquery parentheses skipped)."""
    found = []
    parent = node.parent
    while parent is not None and parent is not root:
        if not isinstance(parent, exp.Subquery):
            found.append(parent)
        parent = parent.parent
    return found


def _branches(node: exp.Expr, target: EncryptionTarget, top: exp.SetOperation) -> list[exp.Select]:
    """The SELECTs a UNION flattens to (UNION and UNION ALL below a UNION give the same rows
    once the outer UNION removes duplicates); other nesting is refused."""
    if isinstance(node, exp.Select):
        return [node]
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        return [node.this]
    if isinstance(node, exp.Union) and isinstance(top, exp.Union):
        return [*_branches(node.this, target, top), *_branches(node.expression, target, top)]
    raise _refuse(target, _name(top), "needs SELECTs as its branches (no nested set operations)")


def rewrite_enclave_set_operations(expression: exp.Expr) -> exp.Expr:
    """Turn an outermost distinct set operation over enclave columns into a grouped SELECT.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT t.x AS x FROM t AS t UNION SELECT u.y AS y FROM u AS u")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> for column in tree.find_all(exp.Column):
    ...     column.meta[TARGET] = target
    >>> tree.meta[ENCLAVE] = target
    >>> rewrite_enclave_set_operations(tree).sql("duckdb")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT DISTINCT __ee_set."x" AS "x" FROM (SELECT t.x AS x FROM t AS t UNION ALL
     SELECT u.y AS y FROM u AS u) AS __ee_set'
    """
    for node in expression.find_all(exp.SetOperation):
        inner_target = node.meta.get(ENCLAVE)
        if inner_target is not None and node is not expression:
            # A UNION chain below the outermost UNION is flattened by _branches below.
            if not (
                isinstance(expression, exp.Union)
                and expression.meta.get(ENCLAVE) is not None
                and isinstance(node, exp.Union)
                and all(isinstance(p, exp.Union) for p in _ancestors(node, expression))
            ):
                raise _refuse(
                    inner_target,
                    _name(node),
                    "runs only as the outermost statement (not in a subquery, a CTE or below "
                    "another set operation)",
                )
    if not isinstance(expression, exp.SetOperation) or expression.meta.get(ENCLAVE) is None:
        return expression
    expression = expression.copy()
    target: EncryptionTarget = expression.meta[ENCLAVE]
    construct = _name(expression)
    if not expression.args.get("distinct"):
        raise _refuse(target, f"{construct} ALL", "is not supported; use the distinct form")
    ctes = expression.args.get("with_")
    expression.set("with_", None)
    branches = [
        *_branches(expression.this, target, expression),
        *_branches(expression.expression, target, expression),
    ]
    if isinstance(expression, exp.Union):
        sides: list[exp.Expr] = [branch.copy() for branch in branches]
    else:
        # Tag each row with its side: group ids then tell which sides hold a value.
        sides = []
        for number, branch in enumerate(branches):
            tagged = branch.copy()
            tagged.append("expressions", exp.alias_(exp.Literal.number(number), _SIDE))
            sides.append(tagged)
    combined: exp.Expr = sides[0]
    for side in sides[1:]:
        combined = exp.Union(this=combined, expression=side, distinct=False)

    wrapper = exp.Select()
    names = [p.alias_or_name for p in branches[0].selects]
    if len({n.casefold() for n in names}) != len(names):
        raise _refuse(target, construct, "needs distinct output column names; alias them")
    for index, name in enumerate(names):
        column = exp.Column(
            this=exp.to_identifier(name, quoted=True), table=exp.to_identifier(SET_VIEW)
        )
        found = [origin(branch.selects[index]) for branch in branches]
        column_target = next((t for t, _ in found if t is not None), None)
        column.meta[TARGET] = column_target
        column.meta[DECLARED] = next((d for t, d in found if t is not None), None)
        if column_target is not None:
            column.meta[ENCLAVE] = column_target
        wrapper.append("expressions", exp.alias_(column, name, quoted=True))
    wrapper.set(
        "from_",
        exp.From(this=exp.Subquery(this=combined, alias=exp.TableAlias(this=SET_VIEW))),
    )
    if isinstance(expression, exp.Union):
        wrapper.set("distinct", exp.Distinct())
    else:
        keys = []
        for projection in wrapper.selects:
            key = projection.unalias().copy()
            key.meta.update(projection.unalias().meta)
            keys.append(key)
        for projection in wrapper.selects:
            projection.unalias().meta.pop(ENCLAVE, None)
        wrapper.set("group", exp.Group(expressions=keys))
        side = exp.column(_SIDE, table=SET_VIEW)
        if isinstance(expression, exp.Intersect):
            # On every side: the smallest side number is the first, the count of sides is all.
            keep: exp.Expr = exp.and_(
                exp.EQ(this=exp.func("MIN", side), expression=exp.Literal.number(0)),
                exp.EQ(
                    this=exp.Count(this=exp.Distinct(expressions=[side.copy()])),
                    expression=exp.Literal.number(len(branches)),
                ),
            )
        else:
            if len(branches) != 2:
                raise _refuse(target, construct, "needs exactly two branches")
            keep = exp.EQ(this=exp.func("MAX", side), expression=exp.Literal.number(0))
        wrapper.set("having", exp.Having(this=keep))
    if ctes is not None:
        wrapper.set("with_", ctes)  # visible inside the branches, now a subquery of the wrapper
    for clause in ("order", "limit", "offset"):
        if expression.args.get(clause) is not None:
            wrapper.set(clause, expression.args[clause].copy())
    # Earlier rules' root meta (stage-zero reads of semi-joins in the branches) stays.
    wrapper.meta.update({k: v for k, v in expression.meta.items() if k != ENCLAVE})
    wrapper.meta[SET_OPERATION] = construct
    return wrapper

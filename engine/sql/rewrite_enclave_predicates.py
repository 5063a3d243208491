"""Rewrite rule: turn each predicate the classifier marked for the enclave into a UDF call.

``x < ?`` over a RANDOMIZED, enclave-enabled column becomes ``__ee_compare(x, <query id>,
<cek id>, <type>, <operator>, <constant>)`` with five ``?`` whose values the host and client
fill in; NULL in gives NULL out, so NOT, AND and OR keep SQL's three-valued logic in DuckDB.
It must not encrypt, choose keys or decide what is allowed (the classifier did that).
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.parameterize_literals import ENCLAVE_ROLE as ROLE
from engine.sql.parameterize_literals import LITERAL, USER_INDEX
from engine.sql.plan import EnclaveOperation, EncryptionTarget
from engine.sql.resolve_columns import origin
from engine.types import NormalizationForm, parse_sql_type

__all__ = [
    "COMPARISONS",
    "COMPARE_FUNCTION",
    "COMPARE_COLUMNS_FUNCTION",
    "ROLE",
    "SQL_NAMES",
    "rewrite_enclave_predicates",
    "role_placeholder",
]

COMPARE_FUNCTION = "__ee_compare"
COMPARE_COLUMNS_FUNCTION = "__ee_compare_columns"

COMPARISONS: dict[type[exp.Expr], tuple[str, str]] = {
    # node class: (operator, operator with the operands swapped)
    exp.EQ: ("EQ", "EQ"),
    exp.NEQ: ("NE", "NE"),
    exp.LT: ("LT", "GT"),
    exp.LTE: ("LE", "GE"),
    exp.GT: ("GT", "LT"),
    exp.GTE: ("GE", "LE"),
}
SQL_NAMES = {"EQ": "=", "NE": "<>", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
_STRING_FORMS = (NormalizationForm.UTF8, NormalizationForm.UTF16LE)


def role_placeholder(role: str, operation: EnclaveOperation | None, cast: str) -> exp.Expr:
    """A ``?`` whose value the host (query id) or the client (the rest) fills in, cast as SQL."""
    marker = exp.Placeholder()
    marker.meta[ROLE] = (role, operation)
    return exp.Cast(this=marker, to=exp.DataType.build(cast, dialect="duckdb"))


def _call(function: str, columns: list[exp.Expr], operation: EnclaveOperation) -> exp.Expr:
    arguments = [
        *columns,
        role_placeholder("enclave_query", None, "UBIGINT"),
        role_placeholder("enclave_cek", operation, "INTEGER"),
        role_placeholder("enclave_type", operation, "INTEGER"),
        role_placeholder("enclave_operator", operation, "INTEGER"),
    ]
    if function == COMPARE_FUNCTION:
        arguments.append(role_placeholder("enclave_constant", operation, "BLOB"))
    return exp.Anonymous(this=function, expressions=arguments)


def _source(operand: exp.Expr, target: EncryptionTarget, construct: str) -> tuple[str, Any]:
    """Where a constant operand's value comes from: a lifted literal or the caller's ?."""
    if isinstance(operand, exp.Placeholder):
        if LITERAL in operand.meta:
            return ("literal", operand.meta[LITERAL])
        if USER_INDEX in operand.meta:
            return ("user", operand.meta[USER_INDEX])
    raise NotSupportedError(
        f"{target.label}: `{construct}` in the enclave needs a literal or a ? parameter as its "
        f"operand, not {type(operand).__name__.upper()}"
    )


def _is_column(node: exp.Expr) -> bool:
    return origin(node)[0] is not None


def _type_form(target: EncryptionTarget) -> NormalizationForm:
    return parse_sql_type(target.declared_type).form


def _comparison(node: exp.Expr, target: EncryptionTarget) -> exp.Expr:
    operator, swapped = COMPARISONS[type(node)]
    left, right = node.this, node.expression
    form = _type_form(target).name
    if _is_column(left) and _is_column(right):
        operation = EnclaveOperation(target, operator, form, (), None, SQL_NAMES[operator])
        return _call(COMPARE_COLUMNS_FUNCTION, [left, right], operation)
    column, constant = (left, right) if _is_column(left) else (right, left)
    if column is not left:
        operator = swapped
    if isinstance(constant, exp.Null):
        # x < NULL is NULL for every row; nothing for the enclave to do.
        return exp.Cast(this=exp.Null(), to=exp.DataType.build("BOOLEAN", dialect="duckdb"))
    operation = EnclaveOperation(
        target,
        operator,
        form,
        (_source(constant, target, SQL_NAMES[operator]),),
        None,
        SQL_NAMES[operator],
    )
    return _call(COMPARE_FUNCTION, [column], operation)


def _between(node: exp.Between, target: EncryptionTarget) -> exp.Expr:
    if not _is_column(node.this) or node.args.get("symmetric"):
        raise NotSupportedError(
            f"{target.label}: only `column BETWEEN low AND high` runs in the enclave"
        )
    operands = (
        _source(node.args["low"], target, "BETWEEN"),
        _source(node.args["high"], target, "BETWEEN"),
    )
    operation = EnclaveOperation(
        target, "BETWEEN", _type_form(target).name, operands, None, "BETWEEN"
    )
    return _call(COMPARE_FUNCTION, [node.this], operation)


def _in(node: exp.In, target: EncryptionTarget) -> exp.Expr:
    if node.args.get("query") is not None or node.args.get("unnest") or node.args.get("field"):
        raise NotSupportedError(
            f"{target.label}: `IN (subquery)` over a RANDOMIZED column is not supported in the "
            "enclave; list the values, or join on the column"
        )
    if not _is_column(node.this) or not node.expressions:
        raise NotSupportedError(f"{target.label}: only `column IN (values)` runs in the enclave")
    if any(isinstance(item, exp.Null) for item in node.expressions):
        raise NotSupportedError(
            f"{target.label}: a NULL inside `IN (...)` over a RANDOMIZED column is not "
            "supported; leave it out (it can only make the answer NULL)"
        )
    operands = tuple(_source(item, target, "IN") for item in node.expressions)
    operation = EnclaveOperation(target, "IN", _type_form(target).name, operands, None, "IN")
    return _call(COMPARE_FUNCTION, [node.this], operation)


def _like(node: exp.Like, escape: exp.Expr | None, target: EncryptionTarget) -> exp.Expr:
    if _type_form(target) not in _STRING_FORMS:
        raise NotSupportedError(
            f"{target.label} is {target.declared_type}; LIKE in the enclave needs a string column"
        )
    if not _is_column(node.this) or _is_column(node.expression):
        raise NotSupportedError(
            f"{target.label}: only `column LIKE pattern` with a literal or ? pattern runs in "
            "the enclave"
        )
    escape_char: str | None = None
    if escape is not None:
        if not (isinstance(escape, exp.Literal) and escape.is_string and len(escape.this) == 1):
            raise NotSupportedError(
                f"{target.label}: LIKE ... ESCAPE in the enclave needs a one-character string "
                "literal"
            )
        escape_char = escape.this
    operands = (_source(node.expression, target, "LIKE"),)
    operation = EnclaveOperation(
        target, "LIKE", _type_form(target).name, operands, escape_char, "LIKE"
    )
    call = _call(COMPARE_FUNCTION, [node.this], operation)
    return exp.Not(this=call) if node.args.get("negate") else call


def _rewrite(node: exp.Expr) -> exp.Expr:
    target = node.meta.get(ENCLAVE)
    if target is None:
        if isinstance(node, exp.Escape) and isinstance(node.this, exp.Like):
            inner = node.this.meta.get(ENCLAVE)
            if inner is not None:
                return _like(node.this, node.expression, inner)
        return node
    if isinstance(node, exp.Escape):
        return node
    if type(node) in COMPARISONS:
        return _comparison(node, target)
    if isinstance(node, exp.Between):
        return _between(node, target)
    if isinstance(node, exp.In):
        return _in(node, target)
    if isinstance(node, exp.Like):
        if isinstance(node.parent, exp.Escape) and node.arg_key == "this":
            return node  # the Escape around it is rewritten as a whole
        return _like(node, None, target)
    if isinstance(node, exp.Column):
        raise NotSupportedError(
            f"{target.label}: GROUP BY and DISTINCT over a RANDOMIZED column run in the enclave "
            "only in the outermost SELECT, on plain columns"
        )
    if isinstance(node, exp.Ordered):
        raise NotSupportedError(
            f"{target.label}: ORDER BY over a RANDOMIZED column runs in the enclave only in "
            "the outermost SELECT (not in a window, a subquery or an aggregate's ordering)"
        )
    raise NotSupportedError(
        f"{target.label}: {type(node).__name__.upper()} over a RANDOMIZED column is not "
        "supported in the enclave"
    )


def rewrite_enclave_predicates(expression: exp.Expr) -> exp.Expr:
    """Replace every enclave-marked predicate by an enclave UDF call (a new tree).

    It runs after parameterize_literals, so constant operands are ``?`` placeholders whose
    meta says where their values come from; those values end up in the EnclaveOperation, and
    the call gets the role placeholders instead.

    >>> from sqlglot import parse_one
    >>> from engine.sql.classify_encrypted_operations import ENCLAVE
    >>> from engine.sql.resolve_columns import TARGET
    >>> tree = parse_one("SELECT id FROM t WHERE x < ?")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> for column in tree.find_all(exp.Column):
    ...     if column.name == "x":
    ...         column.meta[TARGET] = target
    >>> tree.find(exp.LT).meta[ENCLAVE] = target
    >>> tree.find(exp.Placeholder).meta["ae_user_index"] = 0
    >>> rewrite_enclave_predicates(tree).sql("duckdb")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT id FROM t WHERE __EE_COMPARE(x, CAST(? AS UBIGINT), CAST(? AS INT),
     CAST(? AS INT), CAST(? AS INT), CAST(? AS BLOB))'
    """
    if not any(ENCLAVE in node.meta for node in expression.walk() if node.meta):
        return expression
    return expression.copy().transform(_rewrite, copy=False)

"""Rewrite rule: comparisons of an encrypted exact-numeric column with a number literal that the
column's type cannot hold exactly (``i = 1.5`` on INTEGER, ``n = 1.234`` on DECIMAL(12,2),
``i < 3000000000``) become the exact equivalent DuckDB would answer with, before the literals
are lifted. It must run after resolve_columns and must never round a value that is compared.

``exact_comparand`` is the same arithmetic for one value; the client applies it to ``?`` values.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from typing import Literal

from sqlglot import exp

from engine.errors import InternalError, NotSupportedError, ProgrammingError
from engine.sql.parameterize_literals import COMPARED
from engine.sql.plan import Plan
from engine.sql.resolve_columns import DECLARED, TARGET
from engine.types import TypeCategory, parse_sql_type

__all__ = ["Comparand", "exact_comparand", "lifted_literals_exact", "rewrite_inexact_comparisons"]

# (kind, value): "value" compares with ``value`` exactly; "all" and "none" mean the comparison
# is TRUE, or FALSE, for every non-NULL cell (and NULL for NULL cells, as in SQL).
Comparand = tuple[Literal["value", "all", "none"], object]
Operator = Literal["EQ", "NE", "LT", "LE", "GT", "GE"]

_INTEGER_BITS = {
    "TINYINT": (8, True),
    "SMALLINT": (16, True),
    "INTEGER": (32, True),
    "BIGINT": (64, True),
    "UTINYINT": (8, False),
    "USMALLINT": (16, False),
    "UINTEGER": (32, False),
    "UBIGINT": (64, False),
}
_NODES: dict[type[exp.Expr], Operator] = {
    exp.EQ: "EQ",
    exp.NEQ: "NE",
    exp.LT: "LT",
    exp.LTE: "LE",
    exp.GT: "GT",
    exp.GTE: "GE",
}
_FLIPPED: dict[Operator, Operator] = {
    "EQ": "EQ",
    "NE": "NE",
    "LT": "GT",
    "LE": "GE",
    "GT": "LT",
    "GE": "LE",
}


def _domain(declared_type: str) -> tuple[int, Decimal, Decimal] | None:
    """(scale, smallest, largest) of an exact-numeric type; None for any other type."""
    try:
        sql_type = parse_sql_type(declared_type)
    except (NotSupportedError, ProgrammingError):
        return None
    if sql_type.name in _INTEGER_BITS:
        bits, signed = _INTEGER_BITS[sql_type.name]
        if signed:
            return 0, Decimal(-(2 ** (bits - 1))), Decimal(2 ** (bits - 1) - 1)
        return 0, Decimal(0), Decimal(2**bits - 1)
    if sql_type.category is TypeCategory.DECIMAL:
        assert sql_type.precision is not None and sql_type.scale is not None
        # Written as digits and exponent: scaleb would round to the default 28 digits.
        largest = Decimal(f"{10**sql_type.precision - 1}E-{sql_type.scale}")
        return sql_type.scale, -largest, largest
    return None


def _as_decimal(value: object) -> Decimal | None:
    """The number a value stands for, or None for a non-number. A float is read as its
    shortest repr, which is what a DECIMAL cell cast to DOUBLE compares equal to."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal) and value.is_finite():
        return value
    return None


def _typed(number: Decimal, scale: int) -> object:
    if scale == 0:
        return int(number)
    with localcontext() as context:
        context.prec = 100  # DECIMAL(38,s) values have more digits than the default 28
        return number.quantize(Decimal(1).scaleb(-scale))


def exact_comparand(value: object, declared_type: str, operator: str) -> Comparand:
    """What ``column <operator> value`` compares with when ``column`` is of ``declared_type``:
    the value itself when the type holds it exactly, the exact bound a range comparison is
    equivalent to, or "all"/"none" when the answer is the same for every non-NULL cell.
    Values that are not numbers, and columns that are not exact-numeric, are left alone.

    >>> exact_comparand(Decimal("2.0"), "INTEGER", "EQ"), exact_comparand(1.5, "INTEGER", "EQ")
    (('value', 2), ('none', None))
    >>> exact_comparand(Decimal("1.5"), "INTEGER", "LT"), exact_comparand(1.5, "INTEGER", "LE")
    (('value', 2), ('value', 1))
    >>> exact_comparand(Decimal("1.234"), "DECIMAL(12,2)", "NE")
    ('all', None)
    >>> exact_comparand(300, "TINYINT", "LT"), exact_comparand(300, "TINYINT", "GT")
    (('all', None), ('none', None))
    >>> exact_comparand("x", "INTEGER", "EQ")
    ('value', 'x')
    """
    if operator not in _FLIPPED:
        raise InternalError(f"exact_comparand has no comparison operator {operator!r}")
    domain = _domain(declared_type)
    number = _as_decimal(value)
    if domain is None or number is None:
        return "value", value
    scale, smallest, largest = domain
    step = Decimal(1).scaleb(-scale)
    below = operator in ("LT", "LE")
    # Outside the type's range, every cell is on the same side of the value.
    if number > largest:
        return ("all" if operator == "NE" or below else "none"), None
    if number < smallest:
        return ("none" if operator == "EQ" or below else "all"), None
    with localcontext() as context:
        context.prec = 100  # room for DECIMAL(38,s) values and their digits past the scale
        if operator in ("EQ", "NE"):
            if number == number.quantize(step):
                return "value", _typed(number, scale)
            return ("none" if operator == "EQ" else "all"), None
        # A range comparison with a value between two cells is one with the nearer cell:
        # x < 1.5 is x < 2 and x <= 1.5 is x <= 1 (on INTEGER).
        up = operator in ("LT", "GE")
        bound = number.quantize(step, rounding=ROUND_CEILING if up else ROUND_FLOOR)
    # Rounded past an end of the range (99.995 on DECIMAL(4,2)): the same, one step away.
    if bound > largest:
        return ("all" if below else "none"), None
    if bound < smallest:
        return ("none" if below else "all"), None
    return "value", _typed(bound, scale)


def _number(node: exp.Expr) -> Decimal | None:
    """The value of a plain number literal (``-1.5``, ``2``); None for anything else, including
    exponent literals, which DuckDB types as DOUBLE and compares inexactly."""
    negative = isinstance(node, exp.Neg)
    literal = node.this if negative else node
    if not (isinstance(literal, exp.Literal) and literal.is_number):
        return None
    text = str(literal.this)
    if "e" in text.lower():
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number.copy_negate() if negative else number  # exact, unlike unary minus


def _literal(value: object) -> exp.Expr:
    text = str(value)
    if text.startswith("-"):
        return exp.Neg(this=exp.Literal.number(text[1:]))
    return exp.Literal.number(text)


def _declared(node: exp.Expr) -> str | None:
    """The declared type of an encrypted column reference; None for anything else."""
    if isinstance(node, exp.Column) and node.meta.get(TARGET) is not None:
        declared = node.meta.get(DECLARED)
        return str(declared) if declared else None
    return None


def _constant(column: exp.Expr, truth: bool) -> exp.Expr:
    """TRUE (or FALSE) for every non-NULL cell of ``column`` and NULL for NULL cells, which is
    what a comparison with a value of no matching cell gives."""
    is_null = exp.Is(this=column.copy(), expression=exp.Null())
    if truth:
        return exp.paren(exp.or_(exp.Not(this=is_null), exp.Null()))
    return exp.paren(exp.and_(is_null, exp.Null()))


def _mark_compared(column: exp.Expr, value: exp.Expr) -> None:
    """Mark a ``?`` compared for equality with an exact-numeric column, so that the client
    makes its value exact (parameters.encrypt_parameters) instead of rounding it."""
    declared = _declared(column)
    if isinstance(value, exp.Placeholder) and declared and _domain(declared) is not None:
        value.meta[COMPARED] = True


def _as_written(value: object, number: object) -> bool:
    """Whether the literal as written already is the exact comparand: the same text, or an
    integer literal equal to the exact DECIMAL or DOUBLE value (``24`` for ``24.00``). Keeping
    the text keeps the lifted value one of the statement's own literals, so the statement's
    plan can be reused as a template for other values (engine.client.plan_templates).

    >>> _as_written(Decimal("24.00"), Decimal("24")), _as_written(Decimal("1.50"), Decimal("1.5"))
    (True, False)
    """
    if str(value) == str(number):
        return True
    written_as_integer = isinstance(number, Decimal) and number.as_tuple().exponent == 0
    return written_as_integer and value == number


def _comparison(node: exp.Binary, operator: Operator) -> exp.Expr:
    left, right = node.this, node.expression
    if operator in ("EQ", "NE"):
        _mark_compared(left, right)
        _mark_compared(right, left)
    if _declared(left) is not None and _number(right) is not None:
        column, number = left, _number(right)
    elif _declared(right) is not None and _number(left) is not None:
        column, number, operator = right, _number(left), _FLIPPED[operator]
    else:
        return node
    declared = _declared(column)
    assert declared is not None and number is not None
    kind, value = exact_comparand(number, declared, operator)
    if kind != "value":
        return _constant(column, kind == "all")
    if _as_written(value, number):
        return node  # already exact: leave the text as written
    if column is left:
        return type(node)(this=column, expression=_literal(value))
    return type(node)(this=_literal(value), expression=column)


def _in(node: exp.In) -> exp.Expr:
    declared = _declared(node.this)
    if declared is None or any(node.args.get(k) is not None for k in ("query", "unnest", "field")):
        return node
    kept: list[exp.Expr] = []
    for item in node.expressions:
        _mark_compared(node.this, item)
        number = _number(item)
        if number is None:
            kept.append(item)
            continue
        kind, value = exact_comparand(number, declared, "EQ")
        if kind == "value":
            kept.append(item if _as_written(value, number) else _literal(value))
    if not kept:
        return _constant(node.this, False)
    if all(a is b for a, b in zip(kept, node.expressions, strict=False)) and len(kept) == len(
        node.expressions
    ):
        return node
    return exp.In(this=node.this, expressions=kept)


def _between(node: exp.Between) -> exp.Expr:
    declared = _declared(node.this)
    low, high = node.args.get("low"), node.args.get("high")
    if declared is None or node.args.get("symmetric") or low is None or high is None:
        return node
    domain = _domain(declared)
    low_number, high_number = _number(low), _number(high)
    if domain is None or (low_number is None and high_number is None):
        return node
    bounds = []
    for literal, number, operator, open_end in (
        (low, low_number, "GE", domain[1]),
        (high, high_number, "LE", domain[2]),
    ):
        if number is None:
            bounds.append(literal)
            continue
        kind, value = exact_comparand(number, declared, operator)
        if kind == "none":
            return _constant(node.this, False)
        # "all": this side bounds nothing, so the type's own end stands in for it.
        if kind == "value" and _as_written(value, number):
            bounds.append(literal)
        else:
            bounds.append(_literal(value if kind == "value" else _typed(open_end, domain[0])))
    return exp.Between(this=node.this, low=bounds[0], high=bounds[1])


def _rewrite(node: exp.Expr) -> exp.Expr:
    operator = _NODES.get(type(node))
    if isinstance(node.parent, (exp.Update, exp.OnConflict)) and node.arg_key == "expressions":
        return node  # SET x = 1.5 assigns (and rounds, as DuckDB does); it compares nothing
    if operator is not None:
        assert isinstance(node, exp.Binary)
        return _comparison(node, operator)
    if isinstance(node, exp.In):
        return _in(node)
    if isinstance(node, exp.Between):
        return _between(node)
    return node


def rewrite_inexact_comparisons(expression: exp.Expr) -> exp.Expr:
    """Make every comparison of an encrypted exact-numeric column with a number literal exact.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT a FROM t WHERE a = 1.5 OR a < 2.5 OR a IN (1, 2.0, 2.5)")
    >>> for column in tree.find_all(exp.Column):
    ...     column.meta[TARGET], column.meta[DECLARED] = object(), "INTEGER"
    >>> rewrite_inexact_comparisons(tree).sql("duckdb")
    'SELECT a FROM t WHERE (a IS NULL AND NULL) OR a < 3 OR a IN (1, 2)'
    """
    return expression.transform(_rewrite, copy=False)


def _unchanged(value: object, declared_type: str, operator: str) -> bool:
    kind, exact = exact_comparand(value, declared_type, operator)
    return kind == "value" and exact == value


def lifted_literals_exact(plan: Plan) -> bool:
    """Whether every literal the plan lifted is a value of its column's type, as this rule
    leaves them. A plan rebuilt from another text's template may hold one that is not (the
    rule's decision hung on the value); such a plan must be described afresh.

    >>> from engine.sql.plan import EncryptionTarget, ParameterSpec
    >>> target = EncryptionTarget("t", "n", "cek1", "DETERMINISTIC", "DECIMAL(12,2)")
    >>> def plan(value):
    ...     return Plan("query", "?", (ParameterSpec(("literal", Decimal(value)), target),))
    >>> lifted_literals_exact(plan("1.25")), lifted_literals_exact(plan("1.234"))
    (True, False)
    """
    for spec in plan.parameters:
        if spec.source[0] == "literal" and spec.target is not None:
            if not _unchanged(spec.source[1], spec.target.declared_type, "EQ"):
                return False
    for operation in plan.enclave_operations:
        operators: list[str]
        if operation.operator in _FLIPPED:
            operators = [operation.operator]
        elif operation.operator == "BETWEEN":
            operators = ["GE", "LE"]
        elif operation.operator == "IN":
            operators = ["EQ"] * len(operation.operands)
        else:
            continue
        for operator, (kind, value) in zip(operators, operation.operands, strict=False):
            if kind == "literal" and not _unchanged(
                value, operation.target.declared_type, operator
            ):
                return False
    return True

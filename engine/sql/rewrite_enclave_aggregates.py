"""Rewrite rule: enclave aggregates (SUM, AVG, MIN, MAX, COUNT(DISTINCT)) become LIST(cells).

DuckDB still filters, groups (on plaintext or deterministic keys), sorts and limits; each marked
aggregate of the outermost SELECT list collects its group's cells with ``LIST`` (SUM or AVG of
arithmetic: one ``STRUCT_PACK`` of its columns per row), and the host hands every list column to
the enclave in one call, which returns one cell per group. It must not rewrite an aggregate whose
value DuckDB would still have to compare or compute with.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.compile_aggregate_expression import compile_aggregate_expression
from engine.sql.plan import EnclaveOperation, EncryptionTarget, ExpressionSlot
from engine.types import NormalizationForm, parse_sql_type

__all__ = ["AGGREGATE", "aggregate_operator", "rewrite_enclave_aggregates", "result_type"]

# Set on the rewritten projection: its EnclaveOperation (with result_column).
AGGREGATE = "ae_enclave_aggregate"

_OPERATORS: dict[type[exp.Expr], str] = {
    exp.Sum: "SUM",
    exp.Avg: "AVG",
    exp.Min: "MIN",
    exp.Max: "MAX",
    exp.Count: "COUNT_DISTINCT",
}
_CONSTRUCTS = {
    "SUM": "SUM",
    "AVG": "AVG",
    "MIN": "MIN",
    "MAX": "MAX",
    "COUNT_DISTINCT": "COUNT(DISTINCT)",
}
_NUMERIC = (
    NormalizationForm.INT64,
    NormalizationForm.DECIMAL,
    NormalizationForm.FLOAT32,
    NormalizationForm.FLOAT64,
)


def aggregate_operator(node: exp.Expr) -> str:
    """The enclave operator name of an aggregate node (``"SUM"``, ``"COUNT_DISTINCT"``...).

    >>> from sqlglot import parse_one
    >>> aggregate_operator(parse_one("AVG(x)")), aggregate_operator(parse_one("COUNT(DISTINCT x)"))
    ('AVG', 'COUNT_DISTINCT')
    """
    return _OPERATORS[type(node)]


def result_type(operator: str, declared_type: str) -> str:
    """The declared type of an enclave aggregate's result cells (what DuckDB's answer has).

    >>> result_type("SUM", "INTEGER"), result_type("SUM", "DECIMAL(18,4)")
    ('DECIMAL(38,0)', 'DECIMAL(38,4)')
    >>> result_type("AVG", "INT")
    'DOUBLE'
    >>> result_type("MAX", "DATE"), result_type("COUNT_DISTINCT", "VARCHAR")
    ('DATE', 'BIGINT')
    """
    sql_type = parse_sql_type(declared_type)
    form = sql_type.form
    if operator == "COUNT_DISTINCT":
        return "BIGINT"
    if operator in ("MIN", "MAX"):
        return declared_type
    if form not in _NUMERIC:
        raise NotSupportedError(f"needs a numeric column, and {declared_type} is not one")
    if operator == "AVG":
        return "DOUBLE"
    if form is NormalizationForm.INT64:
        return "DECIMAL(38,0)"  # DuckDB sums integers into HUGEINT; the enclave into 128 bits
    if form is NormalizationForm.DECIMAL:
        return f"DECIMAL(38,{sql_type.scale or 0})"
    return "DOUBLE"


def _top_level_projection(node: exp.Expr, root: exp.Expr) -> exp.Expr | None:
    """The projection (the node or its alias) when ``node`` is a whole item of root's list."""
    item = node.parent if isinstance(node.parent, exp.Alias) else node
    if item.parent is root and item.arg_key == "expressions":
        return item
    return None


def _refuse(target: EncryptionTarget, construct: str, why: str) -> NotSupportedError:
    return NotSupportedError(f"{target.label}: {construct} in the enclave {why}")


def _check_uses(root: exp.Select, names: set[str], target: EncryptionTarget, what: str) -> None:
    """DuckDB must not sort, filter or compute with an aggregate it only holds as cells."""
    for key, clause_name in (("order", "ORDER BY"), ("having", "HAVING"), ("qualify", "QUALIFY")):
        clause = root.args.get(key)
        if clause is None:
            continue
        for column in clause.find_all(exp.Column):
            if not column.table and column.name.casefold() in names:
                raise _refuse(
                    target, what, f"gives ciphertext; its result cannot be used in {clause_name}"
                )


def _plain_slot(column: exp.Expr, slot: ExpressionSlot) -> exp.Expr:
    """A plaintext column cast to the one Arrow type per form that the host normalizes."""
    if slot.type_form == "INT64":
        return exp.cast(column.copy(), "BIGINT")
    if slot.type_form == "DECIMAL":
        return exp.cast(column.copy(), f"DECIMAL(38, {slot.scale})")
    return exp.cast(column.copy(), "DOUBLE")


def _expression_aggregate(
    operator: str, argument: exp.Expr, index: int
) -> tuple[EnclaveOperation, exp.Expr]:
    """The SUM_EXPR or AVG_EXPR operation of an arithmetic argument, and its replacement:
    ``LIST(STRUCT_PACK(s0 := ..., s1 := ...))``, one struct per row so slots stay aligned."""
    expression, columns = compile_aggregate_expression(argument)
    first = next(slot.target for slot in expression.slots if slot.target is not None)
    if expression.is_float or operator == "AVG":
        result = "DOUBLE"
    else:
        result = f"DECIMAL(38,{expression.scale})"
    operation = EnclaveOperation(
        first,
        f"{operator}_EXPR",
        "FLOAT64" if expression.is_float else "DECIMAL",
        (),
        None,
        f"{operator} of an expression",
        result_column=index,
        result_type=result,
        expression=expression,
    )
    fields = [
        exp.PropertyEQ(
            this=exp.to_identifier(f"s{i}"),
            expression=column.copy() if slot.target is not None else _plain_slot(column, slot),
        )
        for i, (slot, column) in enumerate(zip(expression.slots, columns, strict=True))
    ]
    packed = exp.Anonymous(this="STRUCT_PACK", expressions=fields)
    return operation, exp.Anonymous(this="LIST", expressions=[packed])


def rewrite_enclave_aggregates(expression: exp.Expr) -> exp.Expr:
    """Replace each enclave-marked aggregate of the outermost SELECT list by ``LIST(column)``.

    The projection gets ``meta[AGGREGATE]``: an EnclaveOperation with the result column's index
    and the result's declared type in ``result_type``. Anywhere else (a subquery, HAVING, ORDER
    BY, an expression around it) the aggregate is refused with NotSupportedError.

    >>> from sqlglot import parse_one
    >>> from engine.sql.resolve_columns import TARGET
    >>> tree = parse_one("SELECT g, SUM(x) AS s FROM t GROUP BY g")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> tree.find(exp.Sum).this.meta[TARGET] = target
    >>> tree.find(exp.Sum).meta[ENCLAVE] = target
    >>> rewritten = rewrite_enclave_aggregates(tree)
    >>> rewritten.sql("duckdb")
    'SELECT g, LIST(x) AS s FROM t GROUP BY g'
    >>> operation = rewritten.selects[1].meta[AGGREGATE]
    >>> operation.operator, operation.result_column, operation.result_type
    ('SUM', 1, 'DECIMAL(38,0)')
    """
    marked = [
        node for node in expression.find_all(*_OPERATORS) if node.meta.get(ENCLAVE) is not None
    ]
    if not marked:
        return expression
    expression = expression.copy()
    marked = [
        node for node in expression.find_all(*_OPERATORS) if node.meta.get(ENCLAVE) is not None
    ]
    aliases: set[str] = set()
    for node in marked:
        target = node.meta[ENCLAVE]
        operator = _OPERATORS[type(node)]
        construct = _CONSTRUCTS[operator]
        item = (
            _top_level_projection(node, expression) if isinstance(expression, exp.Select) else None
        )
        if item is None:
            raise _refuse(
                target,
                construct,
                "runs only as a whole item of the outermost SELECT list (not inside an "
                "expression, a subquery, HAVING or ORDER BY)",
            )
        if expression.args.get("distinct"):
            raise _refuse(target, construct, "cannot be combined with SELECT DISTINCT")
        argument = node.this
        while isinstance(argument, exp.Paren):
            argument = argument.this
        if operator in ("SUM", "AVG") and not isinstance(argument, exp.Column):
            # Arithmetic inside SUM or AVG: the enclave evaluates it row by row.
            index = list(expression.expressions).index(item)
            item.meta[AGGREGATE], replacement = _expression_aggregate(operator, argument, index)
            aliases.add(item.alias_or_name.casefold())
            node.replace(replacement)
            continue
        declared = target.declared_type
        try:
            result = result_type(operator, declared)
        except NotSupportedError as error:
            raise _refuse(target, construct, str(error)) from None
        column = node.this.this if isinstance(node.this, exp.Distinct) else node.this
        if isinstance(node.this, exp.Distinct) and len(node.this.expressions) == 1:
            column = node.this.expressions[0]
        if not isinstance(column, exp.Column):
            raise _refuse(target, construct, "needs a bare column as its argument")
        index = list(expression.expressions).index(item)
        operation = EnclaveOperation(
            target,
            operator,
            parse_sql_type(declared).form.name,
            (),
            None,
            construct,
            result_column=index,
            result_type=result,
        )
        item.meta[AGGREGATE] = operation
        aliases.add(item.alias_or_name.casefold())
        node.replace(exp.Anonymous(this="LIST", expressions=[column.copy()]))
    assert isinstance(expression, exp.Select)
    _check_uses(expression, aliases, marked[0].meta[ENCLAVE], "an aggregate")
    return expression

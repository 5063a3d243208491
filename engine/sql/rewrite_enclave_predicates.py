"""Rewrite rule: turn each predicate the classifier marked for the enclave into a UDF call.

``x < ?`` over a RANDOMIZED, enclave-enabled column becomes ``__ee_filter_1(x, <query id>,
<predicate program>)`` with two ``?`` that the host and client fill in (the program packs the
predicate's key id, type, operator and constant: engine/predicate_program.py), and an AND of
such calls becomes one ``__ee_filter_<k>`` call with one program (one enclave pass per vector).
NULL in gives NULL out, so NOT, AND and OR keep SQL's three-valued logic in DuckDB. It must not
encrypt, choose keys or decide what is allowed (the classifier did that).
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
    "FILTER_PREFIX",
    "MAX_CONJUNCTS",
    "PROGRAM_ROLE",
    "ROLE",
    "SQL_NAMES",
    "filter_function",
    "rewrite_enclave_predicates",
    "role_placeholder",
]

COMPARE_FUNCTION = "__ee_compare"
# The role of a filter call's one program marker (engine/predicate_program.py).
PROGRAM_ROLE = "enclave_program"
COMPARE_COLUMNS_FUNCTION = "__ee_compare_columns"
FILTER_PREFIX = "__ee_filter_"
# The most predicates one __ee_filter_<k> call takes; a longer AND is split into several calls.
MAX_CONJUNCTS = 8


def filter_function(k: int) -> str:
    """The UDF that ANDs ``k`` enclave predicates.

    >>> filter_function(3)
    '__ee_filter_3'
    """
    return f"{FILTER_PREFIX}{k}"


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


def role_placeholder(
    role: str, operation: EnclaveOperation | tuple[EnclaveOperation, ...] | None, cast: str
) -> exp.Expr:
    """A ``?`` whose value the host (query id) or the client (the rest) fills in, cast as SQL.
    A predicate program's ``?`` carries the tuple of its operations, in call order."""
    marker = exp.Placeholder()
    marker.meta[ROLE] = (role, operation)
    return exp.Cast(this=marker, to=exp.DataType.build(cast, dialect="duckdb"))


def _call(function: str, columns: list[exp.Expr], operation: EnclaveOperation) -> exp.Expr:
    query = role_placeholder("enclave_query", None, "UBIGINT")
    if function == COMPARE_FUNCTION:
        # Codes and constant go as one program, by reference: the host binds a small integer.
        program = role_placeholder(PROGRAM_ROLE, (operation,), "UBIGINT")
        return exp.Anonymous(this=filter_function(1), expressions=[*columns, query, program])
    arguments = [
        *columns,
        query,
        role_placeholder("enclave_cek", operation, "INTEGER"),
        role_placeholder("enclave_type", operation, "INTEGER"),
        role_placeholder("enclave_operator", operation, "INTEGER"),
    ]
    return exp.Anonymous(this=function, expressions=arguments)


def _filter_parts(
    node: exp.Expr,
) -> tuple[list[exp.Expr], exp.Expr, tuple[EnclaveOperation, ...]] | None:
    """(cell columns, query marker, operations of its program) of an __ee_filter_<k> call,
    else None."""
    if not (isinstance(node, exp.Anonymous) and str(node.name).startswith(FILTER_PREFIX)):
        return None
    k = int(str(node.name)[len(FILTER_PREFIX) :])
    arguments = list(node.expressions)
    program = arguments[k + 1]
    marker = program.this if isinstance(program, exp.Cast) else program
    return arguments[:k], arguments[k], marker.meta[ROLE][1]


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    """The operands of an AND chain, through parentheses (AND is associative)."""
    inner = node.unnest() if isinstance(node, exp.Paren) else node
    if isinstance(inner, exp.And):
        return _conjuncts(inner.this) + _conjuncts(inner.expression)
    return [node]


def _merge_conjunction(node: exp.Expr) -> exp.Expr:
    """One __ee_filter_<k> call for the enclave predicates of an AND chain over the same tables
    (at most MAX_CONJUNCTS each), in the order written: the enclave then reads a later
    predicate's cells only for rows the earlier ones left TRUE or unknown. Predicates over
    different tables stay apart, so that DuckDB can still push each below a join (and a join's
    side read, which holds one side's predicates, binds the same program)."""
    if not isinstance(node, exp.And) or isinstance(node.parent, exp.And):
        return node
    operands = _conjuncts(node)
    groups: dict[tuple[str, ...], list[exp.Expr]] = {}
    for operand in operands:
        parts = _filter_parts(operand)
        if parts is not None:
            tables = tuple(
                sorted({column.table for c in parts[0] for column in c.find_all(exp.Column)})
            )
            groups.setdefault(tables, []).append(operand)
    if all(len(calls) < 2 for calls in groups.values()):
        return node
    merged_at: dict[int, list[exp.Expr]] = {
        id(calls[0]): _merged(calls) for calls in groups.values()
    }
    members = {id(call) for calls in groups.values() for call in calls}
    # Each group's calls take the place of its first predicate; the rest keep their order.
    ordered: list[exp.Expr] = []
    for operand in operands:
        if id(operand) in merged_at:
            ordered += merged_at[id(operand)]
        elif id(operand) not in members:
            ordered.append(operand)
    return exp.and_(*ordered, copy=False)


def _merged(calls: list[exp.Expr]) -> list[exp.Expr]:
    """The calls of one group as __ee_filter_<k> calls of at most MAX_CONJUNCTS predicates."""
    if len(calls) == 1:
        return calls
    merged: list[exp.Expr] = []
    for start in range(0, len(calls), MAX_CONJUNCTS):
        columns: list[exp.Expr] = []
        operations: list[EnclaveOperation] = []
        query: exp.Expr | None = None
        for call in calls[start : start + MAX_CONJUNCTS]:
            parts = _filter_parts(call)
            assert parts is not None
            columns += parts[0]
            operations += parts[2]
            query = parts[1] if query is None else query
        assert query is not None
        program = role_placeholder(PROGRAM_ROLE, tuple(operations), "UBIGINT")
        merged.append(
            exp.Anonymous(
                this=filter_function(len(columns)), expressions=[*columns, query, program]
            )
        )
    return merged


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


def _null_safe(node: exp.Expr, target: EncryptionTarget) -> exp.Expr:
    """IS [NOT] DISTINCT FROM: the enclave's EQ, with NULLs made TRUE/FALSE by the host.

    Against a constant (never NULL once encrypted), a NULL cell is simply distinct; against a
    column under the same key, two NULLs are not distinct. A NULL literal needs no enclave.
    """
    same = isinstance(node, exp.NullSafeEQ)
    construct = "IS NOT DISTINCT FROM" if same else "IS DISTINCT FROM"
    left, right = node.this, node.expression
    false, true = exp.false(), exp.true()
    if _is_column(left) and _is_column(right):
        operation = EnclaveOperation(target, "EQ", _type_form(target).name, (), None, construct)
        equal = exp.Coalesce(
            this=_call(COMPARE_COLUMNS_FUNCTION, [left, right], operation), expressions=[false]
        )
        both_null = exp.and_(
            exp.Is(this=left.copy(), expression=exp.Null()),
            exp.Is(this=right.copy(), expression=exp.Null()),
        )
        answer: exp.Expr = exp.Paren(this=exp.or_(both_null, equal))
        return answer if same else exp.Not(this=answer)
    column, constant = (left, right) if _is_column(left) else (right, left)
    if isinstance(constant, exp.Null):
        is_null = exp.Is(this=column, expression=exp.Null())
        return is_null if same else exp.Not(this=is_null)
    operation = EnclaveOperation(
        target,
        "EQ",
        _type_form(target).name,
        (_source(constant, target, construct),),
        None,
        construct,
    )
    call = _call(COMPARE_FUNCTION, [column], operation)
    if same:
        return exp.Coalesce(this=call, expressions=[false])
    return exp.Coalesce(this=exp.Not(this=call), expressions=[true])


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
    if isinstance(node, exp.NullSafeEQ | exp.NullSafeNEQ):
        return _null_safe(node, target)
    if isinstance(node, exp.Between):
        return _between(node, target)
    if isinstance(node, exp.In):
        return _in(node, target)
    if isinstance(node, exp.Like):
        if isinstance(node.parent, exp.Escape) and node.arg_key == "this":
            return node  # the Escape around it is rewritten as a whole
        return _like(node, None, target)
    kind = f"{target.label} is {target.encryption_type}"
    if isinstance(node, exp.Column):
        raise NotSupportedError(
            f"{kind}: GROUP BY and DISTINCT over it run in the enclave only in the outermost "
            "SELECT, on plain columns"
        )
    if isinstance(node, exp.Ordered):
        raise NotSupportedError(
            f"{kind}: ORDER BY over it runs in the enclave only in the outermost SELECT (not in "
            "a window, a subquery or an aggregate's ordering)"
        )
    raise NotSupportedError(
        f"{kind}: {type(node).__name__.upper()} over it is not supported in the enclave"
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
    'SELECT id FROM t WHERE __EE_FILTER_1(x, CAST(? AS UBIGINT), CAST(? AS UBIGINT))'
    """
    if not any(ENCLAVE in node.meta for node in expression.walk() if node.meta):
        return expression
    rewritten = expression.copy().transform(_rewrite, copy=False)
    return rewritten.transform(_merge_conjunction, copy=False)

"""Rewrite rule: HAVING and ORDER BY over enclave aggregates, as a stage after the aggregates.

Stage one is the grouped statement without HAVING, ORDER BY, LIMIT and OFFSET. Each enclave
aggregate those clauses use is added to its SELECT list (``__ee_a<k>``, or ``__ee_rank_<k>``,
whose result cells the host swaps for the enclave's ranks), with the plaintext HAVING terms
(``__ee_h<k>``) and the role markers of the enclave comparisons (``__ee_p<k>``). Stage two, kept
as text in the root's meta, filters with ``__ee_compare`` over the aggregate cells and sorts by
the ranks in DuckDB; a DETERMINISTIC GROUP BY key in ORDER BY (grouped natively on ciphertext)
is ranked the same way. It must not compare or sort ciphertext itself, and refuses the rest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import BIND, ENCLAVE, literal_value
from engine.sql.dialect import to_sql
from engine.sql.parameterize_literals import LITERAL, USER_INDEX
from engine.sql.plan import EnclaveOperation, EncryptionTarget
from engine.sql.rewrite_enclave_aggregates import aggregate_operator, result_type
from engine.sql.rewrite_enclave_order import EXTRA, FINISH, RANK, STAGE_VIEW
from engine.sql.rewrite_enclave_predicates import (
    COMPARE_FUNCTION,
    COMPARISONS,
    SQL_NAMES,
    role_placeholder,
)
from engine.types import parse_sql_type

__all__ = ["SORT_BY_GROUP_ID", "bind_aggregate_constants", "rewrite_enclave_having"]

# Projection meta of an added sort key that is an enclave GROUP BY key (its SQL text):
# rewrite_enclave_grouping fills the column with the key's group ids instead of its cells.
SORT_BY_GROUP_ID = "ae_enclave_sort_by_group_id"


def _is_marked(node: exp.Expr) -> bool:
    return isinstance(node, exp.AggFunc) and node.meta.get(ENCLAVE) is not None


def _uses_enclave(node: exp.Expr | None) -> bool:
    return node is not None and any(_is_marked(n) for n in node.walk())


def _refuse(target: EncryptionTarget, construct: str, why: str) -> NotSupportedError:
    return NotSupportedError(f"{target.label}: {construct} over an enclave aggregate {why}")


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _result_target(node: exp.Expr) -> EncryptionTarget:
    """The aggregate's result cells: under the column's key, in the aggregate's result type."""
    target: EncryptionTarget = node.meta[ENCLAVE]
    try:
        result = result_type(aggregate_operator(node), target.declared_type)
    except NotSupportedError as error:
        raise _refuse(target, "HAVING or ORDER BY", str(error)) from None
    return replace(target, declared_type=result)


def bind_aggregate_constants(expression: exp.Expr) -> exp.Expr:
    """Mark each literal compared with an enclave aggregate for encryption in the aggregate's
    result type (a new tree), so that parameterize_literals lifts it out of the SQL text the
    host sees, as classify_encrypted_operations does for literals compared with columns.

    >>> from sqlglot import parse_one
    >>> from engine.sql.classify_encrypted_operations import BIND
    >>> tree = parse_one("SELECT g FROM t GROUP BY g HAVING AVG(x) > 5")
    >>> tree.find(exp.Avg).meta[ENCLAVE] = EncryptionTarget("t", "x", "k", "RANDOMIZED", "INT")
    >>> bind_aggregate_constants(tree).find(exp.Literal).meta[BIND].declared_type
    'DOUBLE'
    """
    comparisons: tuple[type[exp.Expr], ...] = (*COMPARISONS, exp.Between)
    if not any(_is_marked(n) for n in expression.walk()):
        return expression
    expression = expression.copy()
    for node in expression.find_all(*comparisons):
        operands = [
            _unparen(o)
            for o in (node.this, node.expression, node.args.get("low"), node.args.get("high"))
            if o is not None
        ]
        marked = [o for o in operands if _is_marked(o)]
        if len(marked) != 1:
            continue  # nothing to bind, or refused later by rewrite_enclave_having
        try:
            target = _result_target(marked[0])
        except NotSupportedError:
            continue  # rewrite_enclave_aggregates refuses it with its own message
        for operand in operands:
            if operand is not marked[0] and literal_value(operand)[0]:
                operand.meta[BIND] = target
    return expression


class _Stage:
    """Stage one's added columns, and the pieces of stage two that refer to them."""

    def __init__(self, select: exp.Select, encrypted_keys: set[str]) -> None:
        self.select = select
        self.encrypted_keys = encrypted_keys
        self.names: list[str] = []
        self.aggregate_columns: dict[str, tuple[str, EncryptionTarget]] = {}
        self.query_marker: str | None = None

    def add(self, node: exp.Expr, name: str) -> int:
        """Append ``node AS name`` to stage one's list; the index of the new column."""
        projection = exp.alias_(node, name)
        projection.meta[EXTRA] = True
        index = len(self.select.expressions)
        self.select.append("expressions", projection)
        self.names.append(name)
        return index

    def aggregate(self, node: exp.Expr) -> tuple[str, EncryptionTarget]:
        """The stage-one column of an aggregate's result cells, and the result's target."""
        text = node.sql("duckdb")
        if text not in self.aggregate_columns:
            column = f"__ee_a{len(self.aggregate_columns)}"
            self.add(node.copy(), column)
            self.aggregate_columns[text] = (column, _result_target(node))
        return self.aggregate_columns[text]

    def marker(self, role: str, operation: EnclaveOperation | None, cast: str) -> exp.Expr:
        if role == "enclave_query":
            if self.query_marker is None:
                self.query_marker = "__ee_q"
                self.add(role_placeholder(role, None, cast), self.query_marker)
            return exp.column(self.query_marker)
        name = f"__ee_p{len(self.names)}"
        self.add(role_placeholder(role, operation, cast), name)
        return exp.column(name)

    def compare(self, column: str, operation: EnclaveOperation) -> exp.Expr:
        """``__ee_compare`` over the aggregate cells, its arguments stage one's columns."""
        arguments = [
            exp.column(column),
            self.marker("enclave_query", None, "UBIGINT"),
            self.marker("enclave_cek", operation, "INTEGER"),
            self.marker("enclave_type", operation, "INTEGER"),
            self.marker("enclave_operator", operation, "INTEGER"),
            self.marker("enclave_constant", operation, "BLOB"),
        ]
        return exp.Anonymous(this=COMPARE_FUNCTION, expressions=arguments)


def _source(operand: exp.Expr, target: EncryptionTarget, construct: str) -> tuple[str, Any]:
    """Where a comparand comes from: the caller's ``?`` or a literal the client encrypts."""
    if isinstance(operand, exp.Placeholder) and LITERAL in operand.meta:
        return ("literal", operand.meta[LITERAL])
    if isinstance(operand, exp.Placeholder) and USER_INDEX in operand.meta:
        return ("user", operand.meta[USER_INDEX])
    is_literal, value = literal_value(operand)
    if is_literal:
        return ("literal", value)
    raise _refuse(target, f"HAVING {construct}", "needs a literal or a ? parameter to compare with")


def _named_projection(select: exp.Select, key: exp.Expr) -> exp.Expr | None:
    """The output column an ORDER BY key names (by position or alias), if it names one."""
    projections = [p for p in select.selects if not p.meta.get(EXTRA)]
    if isinstance(key, exp.Literal) and key.is_int:
        index = int(key.this) - 1
        return projections[index] if 0 <= index < len(projections) else None
    if isinstance(key, exp.Column) and not key.table:
        name = key.name.casefold()
        return next((p for p in projections if p.alias_or_name.casefold() == name), None)
    return None


def _deterministic_key(ordered: exp.Ordered) -> EncryptionTarget | None:
    """The target of a DETERMINISTIC sort key the enclave ranks (classify marks it), if any."""
    target = ordered.meta.get(ENCLAVE)
    if isinstance(target, EncryptionTarget) and target.encryption_type == "DETERMINISTIC":
        return target
    return None


def _order_uses_enclave(select: exp.Select) -> bool:
    order = select.args.get("order")
    if order is None:
        return False
    grouped = select.args.get("group") is not None or any(
        p.find(exp.AggFunc) is not None for p in select.selects
    )
    for ordered in order.expressions:
        if grouped and _deterministic_key(ordered) is not None:
            # A deterministic GROUP BY key groups natively on ciphertext; only its order needs
            # the enclave, which ranks the grouped result's cells in this rule's stage.
            return True
        named = _named_projection(select, ordered.this)
        if _uses_enclave(ordered.this) or (named is not None and _is_marked(named.unalias())):
            return True
    return False


def _condition(node: exp.Expr, stage: _Stage) -> exp.Expr:
    """Stage two's version of a HAVING condition (or part of one)."""
    if not _uses_enclave(node):
        # Plaintext: DuckDB evaluates it in stage one, stage two reads the boolean.
        name = f"__ee_h{len(stage.names)}"
        stage.add(node.copy(), name)
        return exp.column(name)
    if isinstance(node, exp.Paren):
        return exp.Paren(this=_condition(node.this, stage))
    if isinstance(node, (exp.And, exp.Or)):
        return type(node)(
            this=_condition(node.this, stage), expression=_condition(node.expression, stage)
        )
    if isinstance(node, exp.Not):
        return exp.Not(this=_condition(node.this, stage))
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        if _is_marked(_unparen(node.this)):
            column, _ = stage.aggregate(_unparen(node.this))
            return exp.Is(this=exp.column(column), expression=exp.Null())
    if type(node) in COMPARISONS:
        operator, swapped = COMPARISONS[type(node)]
        left, right = _unparen(node.this), _unparen(node.expression)
        if _is_marked(right) and not _uses_enclave(left):
            left, right, operator = right, left, swapped
        if _is_marked(left) and not _uses_enclave(right):
            column, target = stage.aggregate(left)
            if isinstance(right, exp.Null):
                return exp.Cast(this=exp.Null(), to=exp.DataType.build("BOOLEAN"))
            construct = SQL_NAMES[operator]
            operation = EnclaveOperation(
                target,
                operator,
                parse_sql_type(target.declared_type).form.name,
                (_source(right, target, construct),),
                None,
                f"HAVING {construct}",
            )
            return stage.compare(column, operation)
    if isinstance(node, exp.Between) and not node.args.get("symmetric"):
        aggregate = _unparen(node.this)
        low, high = _unparen(node.args["low"]), _unparen(node.args["high"])
        if _is_marked(aggregate) and not (_uses_enclave(low) or _uses_enclave(high)):
            column, target = stage.aggregate(aggregate)
            operation = EnclaveOperation(
                target,
                "BETWEEN",
                parse_sql_type(target.declared_type).form.name,
                (_source(low, target, "BETWEEN"), _source(high, target, "BETWEEN")),
                None,
                "HAVING BETWEEN",
            )
            return stage.compare(column, operation)
    marked = next(n for n in node.walk() if _is_marked(n))
    raise _refuse(
        marked.meta[ENCLAVE],
        "HAVING",
        "runs only as `aggregate <op> constant` (=, <>, <, <=, >, >=, BETWEEN or IS NULL, "
        "with a literal or ? as the constant), combined with AND, OR and NOT",
    )


def _is_encrypted_key(node: exp.Expr, stage: _Stage) -> bool:
    """An enclave GROUP BY key (the classifier marks the key in GROUP BY, not its uses)."""
    return isinstance(node, exp.Column) and node.sql("duckdb") in stage.encrypted_keys


def _unmarked(node: exp.Expr) -> exp.Expr:
    copied = node.copy()
    for child in copied.walk():
        child.meta.pop(ENCLAVE, None)
    return copied


def _order_key(ordered: exp.Ordered, position: int, stage: _Stage) -> exp.Expr:
    """Stage two's sort key for one ORDER BY item: a rank, an output column or an added key."""
    key = ordered.this
    named = _named_projection(stage.select, key)
    deterministic = _deterministic_key(ordered)
    if deterministic is not None:
        # The grouped result's cells of a deterministic key: the enclave ranks them in place.
        name = f"__ee_rank_{position}"
        index = stage.add(_unmarked(named.unalias() if named is not None else key), name)
        stage.select.expressions[index].meta[RANK] = EnclaveOperation(
            deterministic,
            "RANK",
            parse_sql_type(deterministic.declared_type).form.name,
            (),
            None,
            "ORDER BY",
            result_column=index,
        )
        return exp.column(name)
    if named is not None:
        if _is_marked(named.unalias()) or _is_encrypted_key(named.unalias(), stage):
            key = named.unalias()
        else:
            return exp.column(named.alias_or_name, quoted=True)
    if _is_encrypted_key(key, stage):
        # An enclave GROUP BY key: stage two outputs its cells, so sort by its group ids, which
        # rewrite_enclave_grouping puts in this column (they ascend with the values).
        name = f"__ee_key_{position}"
        index = stage.add(_unmarked(key), name)
        stage.select.expressions[index].meta[SORT_BY_GROUP_ID] = key.sql("duckdb")
        return exp.column(name)
    if _is_marked(key):
        # A column of its own, not shared with HAVING: the ranks replace its cells in place.
        name = f"__ee_rank_{position}"
        target = _result_target(key)
        index = stage.add(key.copy(), name)
        stage.select.expressions[index].meta[RANK] = EnclaveOperation(
            target,
            "RANK",
            parse_sql_type(target.declared_type).form.name,
            (),
            None,
            "ORDER BY",
            result_column=index,
        )
        return exp.column(name)
    if _uses_enclave(key):
        marked = next(n for n in key.walk() if _is_marked(n))
        raise _refuse(
            marked.meta[ENCLAVE], "ORDER BY", "runs only on the aggregate itself or its alias"
        )
    name = f"__ee_key_{position}"
    stage.add(key.copy(), name)
    return exp.column(name)


def _refuse_deterministic_order_of_enclave_distinct(select: exp.Select) -> None:
    """SELECT DISTINCT over a RANDOMIZED column becomes enclave grouping (rewrite_enclave_grouping),
    whose stage two would sort a DETERMINISTIC key's ciphertext: refuse that combination."""
    order = select.args.get("order")
    if not select.args.get("distinct") or order is None:
        return
    keys = [t for t in (_deterministic_key(o) for o in order.expressions) if t is not None]
    enclave = [p for p in select.selects if p.unalias().meta.get(ENCLAVE) is not None]
    if keys and enclave:
        raise NotSupportedError(
            f"{keys[0].label}: ORDER BY a DETERMINISTIC column cannot be combined with DISTINCT "
            f"over the RANDOMIZED column {enclave[0].unalias().meta[ENCLAVE].label}; write "
            "GROUP BY with the same columns instead of DISTINCT"
        )


def rewrite_enclave_having(expression: exp.Expr) -> exp.Expr:
    """Split a SELECT whose HAVING or ORDER BY uses an enclave aggregate into two stages.

    >>> from sqlglot import parse_one
    >>> sql = "SELECT g FROM t GROUP BY g HAVING MAX(x) > 5 ORDER BY g LIMIT 2"
    >>> tree = parse_one(sql, read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> tree.find(exp.Max).meta[ENCLAVE] = target
    >>> staged = rewrite_enclave_having(tree)
    >>> staged.sql("duckdb")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT g, MAX(x) AS __ee_a0, CAST(? AS UBIGINT) AS __ee_q, CAST(? AS INT) AS __ee_p2,
     CAST(? AS INT) AS __ee_p3, CAST(? AS INT) AS __ee_p4, CAST(? AS BLOB) AS __ee_p5
     FROM t GROUP BY g'
    >>> staged.meta[FINISH]  # doctest: +NORMALIZE_WHITESPACE
    'SELECT * EXCLUDE (__ee_a0, __ee_q, __ee_p2, __ee_p3, __ee_p4, __ee_p5) FROM __ee_stage
     WHERE __EE_COMPARE(__ee_a0, __ee_q, __ee_p2, __ee_p3, __ee_p4, __ee_p5)
     ORDER BY "g" LIMIT 2'
    """
    if not isinstance(expression, exp.Select):
        return expression
    _refuse_deterministic_order_of_enclave_distinct(expression)
    having, order = expression.args.get("having"), expression.args.get("order")
    if not (_uses_enclave(having) or _order_uses_enclave(expression)):
        return expression
    expression = expression.copy()
    having, order = expression.args.get("having"), expression.args.get("order")
    parts = [having, order, *expression.selects]
    marked = [n for part in parts if part is not None for n in part.walk() if _is_marked(n)]
    deterministic = [_deterministic_key(o) for o in (order.expressions if order else [])]
    target: EncryptionTarget = (
        marked[0].meta[ENCLAVE] if marked else next(t for t in deterministic if t is not None)
    )
    # With an encrypted GROUP BY key, rewrite_enclave_grouping later moves this statement into
    # its stage two and what this rule builds becomes stage three (Plan.final_sql); ORDER BY
    # such a key then sorts by its group ids.
    group = expression.args.get("group")
    encrypted_keys = {
        c.sql("duckdb")
        for c in (group.expressions if group is not None else [])
        if isinstance(c, exp.Column) and c.meta.get(ENCLAVE) is not None
    }

    def names_key(key: exp.Expr) -> bool:
        named = _named_projection(expression, key)
        return (named.unalias() if named is not None else key).sql("duckdb") in encrypted_keys

    if order is not None and any(
        o.meta.get(ENCLAVE) is not None and _deterministic_key(o) is None and not names_key(o.this)
        for o in order.expressions
    ):
        raise _refuse(target, "ORDER BY", "cannot be combined with ORDER BY an encrypted column")
    for key, name in (("distinct", "DISTINCT"), ("qualify", "QUALIFY"), ("windows", "WINDOW")):
        if expression.args.get(key):
            raise _refuse(target, "HAVING or ORDER BY", f"cannot be combined with {name}")
    for key in ("limit", "offset"):
        node = expression.args.get(key)
        if node is not None and node.find(exp.Placeholder) is not None:
            raise _refuse(target, "ORDER BY", f"needs a literal {key.upper()}, not a ? parameter")

    stage = _Stage(expression, encrypted_keys)
    finish = exp.select(exp.Star()).from_(STAGE_VIEW)
    if having is not None:
        finish.set("where", exp.Where(this=_condition(having.this, stage)))
    if order is not None:
        finish.set(
            "order",
            exp.Order(
                expressions=[
                    exp.Ordered(
                        this=_order_key(ordered, position, stage),
                        desc=ordered.args.get("desc"),
                        nulls_first=ordered.args.get("nulls_first"),
                    )
                    for position, ordered in enumerate(order.expressions)
                ]
            ),
        )
    finish.set("expressions", [exp.Star(except_=[exp.column(n) for n in stage.names])])
    for key in ("limit", "offset"):
        if expression.args.get(key) is not None:
            finish.set(key, expression.args[key].copy())
            expression.set(key, None)
    for key in ("having", "order"):
        expression.set(key, None)
    expression.meta[FINISH] = to_sql(finish)
    return expression

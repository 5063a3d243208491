"""Rewrite rule: ORDER BY over RANDOMIZED enclave-enabled columns, as two stages.

Stage one is the statement without ORDER BY, LIMIT and OFFSET, with each sort key added to the
SELECT list (``__ee_rank_<i>`` for an encrypted column, whose cells the host swaps for the
enclave's dense ranks; ``__ee_key_<i>`` for a plaintext one). Stage two, kept as text in the
root's meta, sorts and limits stage one's rows by those columns in DuckDB. It must not sort
ciphertext, and refuses what it cannot split this way (GROUP BY, DISTINCT, set operations).
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.plan import EnclaveOperation, EncryptionTarget
from engine.types import parse_sql_type

__all__ = ["EXTRA", "FINISH", "RANK", "STAGE_VIEW", "rewrite_enclave_order"]

# Root meta: the stage-two SQL text (it reads the view STAGE_VIEW).
FINISH = "ae_enclave_finish"
# Projection meta: an added sort column (not a result column); RANK also holds its operation.
EXTRA = "ae_enclave_extra"
RANK = "ae_enclave_rank"
STAGE_VIEW = "__ee_stage"


def _refuse(target: EncryptionTarget, why: str) -> NotSupportedError:
    return NotSupportedError(f"{target.label}: ORDER BY in the enclave {why}")


def _has_placeholder(node: exp.Expr | None) -> bool:
    return node is not None and node.find(exp.Placeholder) is not None


def rewrite_enclave_order(expression: exp.Expr) -> exp.Expr:
    """Split a SELECT whose ORDER BY names an enclave column into the two stages (a new tree).

    >>> from sqlglot import parse_one
    >>> from engine.sql.resolve_columns import TARGET
    >>> tree = parse_one("SELECT id, x FROM t ORDER BY x DESC, id LIMIT 3", read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> ordered = tree.args["order"].expressions[0]
    >>> ordered.this.meta[TARGET] = target
    >>> ordered.meta[ENCLAVE] = target
    >>> staged = rewrite_enclave_order(tree)
    >>> staged.sql("duckdb")
    'SELECT id, x, x AS __ee_rank_0, id AS __ee_key_1 FROM t'
    >>> staged.meta[FINISH]  # doctest: +NORMALIZE_WHITESPACE
    'SELECT * EXCLUDE (__ee_rank_0, __ee_key_1) FROM __ee_stage
     ORDER BY __ee_rank_0 DESC, __ee_key_1 LIMIT 3'
    """
    order = expression.args.get("order")
    if order is None or not any(o.meta.get(ENCLAVE) is not None for o in order.expressions):
        return expression
    expression = expression.copy()
    order = expression.args["order"]
    target: EncryptionTarget = next(
        o.meta[ENCLAVE] for o in order.expressions if o.meta.get(ENCLAVE) is not None
    )
    if not isinstance(expression, exp.Select):
        raise _refuse(target, "runs only on a plain SELECT (not on UNION or other set operations)")
    for key, name in (("group", "GROUP BY"), ("distinct", "DISTINCT"), ("having", "HAVING")):
        if expression.args.get(key):
            raise _refuse(target, f"cannot be combined with {name}")
    if any(isinstance(p.unalias(), exp.AggFunc) for p in expression.selects):
        raise _refuse(target, "cannot be combined with aggregates")
    for key in ("limit", "offset"):
        if _has_placeholder(expression.args.get(key)):
            raise _refuse(target, f"needs a literal {key.upper()}, not a ? parameter")
    projections = list(expression.selects)
    sort_names: list[str] = []
    finish_order: list[exp.Expr] = []
    for position, ordered in enumerate(order.expressions):
        key = ordered.this
        ranked = ordered.meta.get(ENCLAVE)
        if isinstance(key, exp.Literal) and key.is_int and ranked is None:
            # ORDER BY <n> names the n-th output column; stage two has it under its name.
            index = int(key.this) - 1
            if not 0 <= index < len(projections):
                raise _refuse(target, f"has no output column {key.this} to sort by")
            column: exp.Expr = exp.column(projections[index].alias_or_name, quoted=True)
        else:
            name = f"__ee_rank_{position}" if ranked is not None else f"__ee_key_{position}"
            extra = exp.alias_(key.copy(), name)
            extra.meta[EXTRA] = True
            if ranked is not None:
                extra.meta[RANK] = EnclaveOperation(
                    ranked,
                    "RANK",
                    parse_sql_type(ranked.declared_type).form.name,
                    (),
                    None,
                    "ORDER BY",
                    result_column=len(projections) + len(sort_names),
                )
            expression.append("expressions", extra)
            sort_names.append(name)
            column = exp.column(name)
        finish_order.append(
            exp.Ordered(
                this=column,
                desc=ordered.args.get("desc"),
                nulls_first=ordered.args.get("nulls_first"),
            )
        )
    finish = exp.select(exp.Star(except_=[exp.column(n) for n in sort_names])).from_(STAGE_VIEW)
    finish.set("order", exp.Order(expressions=finish_order))
    for key in ("limit", "offset"):
        if expression.args.get(key) is not None:
            finish.set(key, expression.args[key].copy())
            expression.set(key, None)
    expression.set("order", None)
    expression.meta[FINISH] = to_sql(finish)
    return expression

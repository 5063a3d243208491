"""Rewrite rule: an equi-JOIN on two RANDOMIZED enclave-enabled columns joins on group ids.

For ``FROM a JOIN b ON a.x = b.y`` (same key), stage zero reads each side's table whole; the host
hands the concatenation of both sides' cells to the enclave's GROUP operator once, appends the
ids (equal values, equal ids) to each side as ``__ee_gid`` and registers the sides as views, and
the statement joins the views on ``a.__ee_gid = b.__ee_gid``. Where the pattern does not fit, the
join is left to the per-row enclave ``=`` (correct, but a nested loop). It must not decide what
is allowed (the classifier did that) and must not change which rows the statement returns.
"""

from __future__ import annotations

from sqlglot import exp

from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.plan import EnclaveOperation, EncryptionTarget, JoinStage
from engine.sql.resolve_columns import TARGET
from engine.types import parse_sql_type

__all__ = ["GROUP_ID", "JOIN_STAGES", "SIDE_READS", "rewrite_enclave_joins", "side_read"]

# Root meta: the JoinStage records, each with its GROUP operation.
JOIN_STAGES = "ae_enclave_join_stages"
GROUP_ID = "__ee_gid"
# Root meta: each join stage's two side reads as trees, which describe renders after the
# predicate rewrite (their WHERE terms may be enclave comparisons).
SIDE_READS = "ae_enclave_side_reads"


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    if isinstance(condition, exp.And):
        return [*_conjuncts(condition.this), *_conjuncts(condition.expression)]
    if isinstance(condition, exp.Paren):
        return _conjuncts(condition.this)
    return [condition]


def _tables(select: exp.Select) -> dict[str, exp.Table]:
    """Base tables of the FROM clause and its joins, by alias (or name)."""
    sources = [select.args["from_"].this] if select.args.get("from_") is not None else []
    sources += [join.this for join in select.args.get("joins") or []]
    found: dict[str, exp.Table] = {}
    for source in sources:
        if isinstance(source, exp.Table) and not source.args.get("joins"):
            found[(source.alias or source.name).casefold()] = source
    return found


def rewrite_enclave_joins(expression: exp.Expr) -> exp.Expr:
    """Turn each fitting enclave equi-join condition into a join on group ids (a new tree).

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT a.id FROM t AS a JOIN u AS b ON a.x = b.y", read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> for column in tree.find_all(exp.Column):
    ...     column.meta[TARGET] = target if column.name in ("x", "y") else None
    >>> tree.find(exp.EQ).meta[ENCLAVE] = target
    >>> joined = rewrite_enclave_joins(tree)
    >>> joined.sql("duckdb")
    'SELECT a.id FROM __ee_join_0_left AS a JOIN __ee_join_0_right AS b ON a.__ee_gid = b.__ee_gid'
    >>> [stage.left_sql for stage in joined.meta[JOIN_STAGES]]
    ['SELECT * FROM t AS a']
    """
    if not isinstance(expression, exp.Select) or not expression.args.get("joins"):
        return expression
    candidates = [
        node
        for join in expression.args["joins"]
        if join.args.get("on") is not None
        for node in _conjuncts(join.args["on"])
        if isinstance(node, exp.EQ) and node.meta.get(ENCLAVE) is not None
    ]
    if not candidates:
        return expression
    expression = expression.copy()
    tables = _tables(expression)
    used: set[str] = set()
    stages: list[JoinStage] = []
    side_reads: list[tuple[exp.Select, exp.Select]] = []
    for join in expression.args["joins"]:
        condition = join.args.get("on")
        if condition is None:
            continue
        for node in _conjuncts(condition):
            target: EncryptionTarget | None = node.meta.get(ENCLAVE)
            if not isinstance(node, exp.EQ) or target is None:
                continue
            left, right = node.this, node.expression
            if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                continue
            names = (left.table.casefold(), right.table.casefold())
            if names[0] == names[1] or any(n not in tables or n in used for n in names):
                continue  # the same side twice, or a side already joined this way
            if left.meta.get(TARGET) is None or right.meta.get(TARGET) is None:
                continue
            number = len(stages)
            views = (f"__ee_join_{number}_left", f"__ee_join_{number}_right")
            sides = []
            for name, view in zip(names, views, strict=True):
                table = tables[name]
                side = side_read(expression, table, name)
                sides.append(side)
                alias = exp.TableAlias(this=exp.to_identifier(table.alias or table.name))
                table.set("alias", alias)
                table.set("this", exp.to_identifier(view))
                table.set("db", None)
                table.set("catalog", None)
                used.add(name)
            operation = EnclaveOperation(
                target,
                "GROUP",
                parse_sql_type(target.declared_type).form.name,
                (),
                None,
                "JOIN",
                result_column=number,
                stage=0,
            )
            stages.append(
                JoinStage(
                    to_sql(sides[0]),
                    to_sql(sides[1]),
                    views[0],
                    views[1],
                    left.name,
                    right.name,
                    operation,
                )
            )
            side_reads.append((sides[0], sides[1]))
            node.replace(
                exp.EQ(
                    this=exp.column(GROUP_ID, table=left.table),
                    expression=exp.column(GROUP_ID, table=right.table),
                )
            )
    if not stages:
        return expression
    expression.meta[JOIN_STAGES] = tuple(stages)
    expression.meta[SIDE_READS] = tuple(side_reads)
    return expression


def _null_supplied(select: exp.Select, table: exp.Table) -> bool:
    """True when an outer join can give ``table``'s columns as NULLs: it is the joined table of
    a LEFT or FULL join, or stands before a RIGHT or FULL join."""
    joins = select.args.get("joins") or []
    for position, join in enumerate(joins):
        side = str(join.args.get("side") or "").upper()
        if join.this is table and side in ("LEFT", "FULL"):
            return True
        if side in ("RIGHT", "FULL"):
            earlier = [select.args["from_"].this] + [j.this for j in joins[:position]]
            if any(source is table for source in earlier):
                return True
    return False


def side_read(select: exp.Select, table: exp.Table, alias: str) -> exp.Select:
    """``SELECT * FROM table AS alias`` with ``select``'s WHERE terms that read this table
    alone (plaintext, deterministic or enclave ones). Dropping rows that fail such a term keeps
    the answer, since the statement still applies it, except on a table an outer join pads with
    NULLs, which gets no terms."""
    read = exp.select("*").from_(table.copy())
    where = select.args.get("where")
    if where is None or _null_supplied(select, table):
        return read
    terms = []
    for term in _conjuncts(where.this):
        columns = list(term.find_all(exp.Column))
        if (
            columns
            and all(c.table.casefold() == alias for c in columns)
            and term.find(exp.Subquery, exp.Exists, exp.AggFunc, exp.Window) is None
        ):
            terms.append(term.copy())
    if terms:
        read.set("where", exp.Where(this=exp.and_(*terms)))
    return read

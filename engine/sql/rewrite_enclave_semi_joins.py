"""Rewrite rule: ``a.x [NOT] IN (SELECT b.y FROM …)`` and a correlated ``b.y = a.x`` inside
``[NOT] EXISTS`` on RANDOMIZED enclave-enabled columns under the same key compare group ids.

As for an equi-JOIN (rewrite_enclave_joins), stage zero reads both tables whole, the enclave
gives group ids over both sides' cells in one call, and the statement reads the two views with
the ids as ``__ee_gid``. NULL cells get NULL ids, so SQL's NULL rules (NOT IN with a NULL in the
subquery is never true) hold unchanged. It must not decide what is allowed (the classifier did)
and refuses with NotSupportedError what does not fit, before anything runs.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.plan import EnclaveOperation, EncryptionTarget, JoinStage
from engine.sql.rewrite_enclave_joins import GROUP_ID, JOIN_STAGES, SIDE_READS, side_read
from engine.types import parse_sql_type

__all__ = ["rewrite_enclave_semi_joins"]


def _refuse(target: EncryptionTarget, construct: str) -> NotSupportedError:
    return NotSupportedError(
        f"{target.label}: `{construct}` in the enclave needs a column of a table in the "
        "enclosing SELECT's FROM clause and a subquery selecting one column of a table in its "
        "own FROM clause (each table used by one such comparison)"
    )


def _source_table(column: exp.Column, select: exp.Select | None) -> exp.Table | None:
    """The base table of ``select``'s FROM clause or joins that ``column`` is qualified with."""
    if select is None or not column.table:
        return None
    sources = [select.args["from_"].this] if select.args.get("from_") is not None else []
    sources += [join.this for join in select.args.get("joins") or []]
    for source in sources:
        if source.alias_or_name.casefold() == column.table.casefold():
            if isinstance(source, exp.Table) and not source.name.startswith("__ee_"):
                return source
            return None
    return None


def _enclosing_table(column: exp.Column, start: exp.Expr) -> exp.Table | None:
    """The base table ``column`` refers to in ``start``'s SELECT or an enclosing one."""
    node: exp.Expr | None = start if isinstance(start, exp.Select) else start.parent_select
    while isinstance(node, exp.Select):
        table = _source_table(column, node)
        if table is not None:
            return table
        node = node.parent_select
    return None


class _Stages:
    def __init__(self, first: int, ctes: set[str]) -> None:
        self.first = first
        self.ctes = ctes
        self.stages: list[JoinStage] = []
        self.side_reads: list[tuple[exp.Select, exp.Select]] = []
        self.used: set[int] = set()

    def usable(self, table: exp.Table | None) -> bool:
        return (
            table is not None
            and id(table) not in self.used
            and table.name.casefold() not in self.ctes
        )

    def add(
        self,
        left: tuple[exp.Table, exp.Column],
        right: tuple[exp.Table, exp.Column],
        target: EncryptionTarget,
        construct: str,
    ) -> None:
        number = self.first + len(self.stages)
        views = (f"__ee_join_{number}_left", f"__ee_join_{number}_right")
        sides = []
        for (table, _), view in zip((left, right), views, strict=True):
            # Only the rows that pass the table's own WHERE terms reach the enclave.
            select = table.parent_select
            if isinstance(select, exp.Select):
                sides.append(side_read(select, table, table.alias_or_name.casefold()))
            else:
                sides.append(exp.select("*").from_(table.copy()))
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.alias_or_name)))
            table.set("this", exp.to_identifier(view))
            table.set("db", None)
            table.set("catalog", None)
            self.used.add(id(table))
        operation = EnclaveOperation(
            target,
            "GROUP",
            parse_sql_type(target.declared_type).form.name,
            (),
            None,
            construct,
            result_column=number,
            stage=0,
        )
        self.stages.append(
            JoinStage(
                to_sql(sides[0]),
                to_sql(sides[1]),
                views[0],
                views[1],
                left[1].name,
                right[1].name,
                operation,
            )
        )
        self.side_reads.append((sides[0], sides[1]))


def _in_subquery(node: exp.In, target: EncryptionTarget, stages: _Stages) -> None:
    construct = "NOT IN (subquery)" if isinstance(node.parent, exp.Not) else "IN (subquery)"
    query = node.args["query"]
    inner = query.this if isinstance(query, exp.Subquery) else query
    outer_column = node.this
    if not (
        isinstance(outer_column, exp.Column)
        and isinstance(inner, exp.Select)
        and len(inner.selects) == 1
        and isinstance(inner.selects[0].unalias(), exp.Column)
    ):
        raise _refuse(target, construct)
    inner_column = inner.selects[0].unalias()
    assert isinstance(inner_column, exp.Column)
    outer_table = _source_table(outer_column, node.parent_select)
    inner_table = _source_table(inner_column, inner)
    if not (stages.usable(outer_table) and stages.usable(inner_table)):
        raise _refuse(target, construct)
    assert outer_table is not None and inner_table is not None
    stages.add((outer_table, outer_column), (inner_table, inner_column), target, construct)
    inner_column.replace(exp.column(GROUP_ID, table=inner_column.table))
    outer_column.replace(exp.column(GROUP_ID, table=outer_column.table))
    node.meta.pop(ENCLAVE, None)


def _correlated_equality(node: exp.EQ, target: EncryptionTarget, stages: _Stages) -> bool:
    """``b.y = a.x`` in the WHERE of an EXISTS subquery, a.x from an enclosing SELECT."""
    select = node.parent_select
    exists = select.parent if select is not None else None
    if isinstance(exists, exp.Subquery):
        exists = exists.parent
    if not isinstance(exists, exp.Exists) or node.find_ancestor(exp.Where) is None:
        return False
    left, right = node.this, node.expression
    if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
        return False
    assert select is not None
    inner_left = _source_table(left, select)
    inner_right = _source_table(right, select)
    if (inner_left is None) == (inner_right is None):
        return False  # both sides inside the subquery (or neither): not a correlation
    inner, outer = (left, right) if inner_left is not None else (right, left)
    inner_table = inner_left or inner_right
    outer_table = _enclosing_table(outer, exists)
    if not (stages.usable(inner_table) and stages.usable(outer_table)):
        return False  # stays a per-row enclave comparison: correct, but a nested loop
    assert inner_table is not None and outer_table is not None
    stages.add((outer_table, outer), (inner_table, inner), target, "EXISTS")
    node.replace(
        exp.EQ(
            this=exp.column(GROUP_ID, table=inner.table),
            expression=exp.column(GROUP_ID, table=outer.table),
        )
    )
    return True


def rewrite_enclave_semi_joins(expression: exp.Expr) -> exp.Expr:
    """Turn enclave ``IN (subquery)`` and EXISTS correlations into group-id comparisons (a new
    tree); their stage-zero reads join ``meta[JOIN_STAGES]`` after the equi-joins'.

    >>> from sqlglot import parse_one
    >>> sql = "SELECT a.id FROM t AS a WHERE a.x IN (SELECT b.y FROM u AS b)"
    >>> tree = parse_one(sql, read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> tree.find(exp.In).meta[ENCLAVE] = target
    >>> rewritten = rewrite_enclave_semi_joins(tree)
    >>> rewritten.sql("duckdb")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT a.id FROM __ee_join_0_left AS a WHERE a.__ee_gid IN
     (SELECT b.__ee_gid FROM __ee_join_0_right AS b)'
    >>> [(s.left_sql, s.right_sql) for s in rewritten.meta[JOIN_STAGES]]
    [('SELECT * FROM t AS a', 'SELECT * FROM u AS b')]
    """

    def wanted(node: exp.Expr) -> bool:
        return node.meta.get(ENCLAVE) is not None and (
            (isinstance(node, exp.In) and node.args.get("query") is not None)
            or (isinstance(node, exp.EQ) and node.find_ancestor(exp.Exists) is not None)
        )

    if not any(wanted(node) for node in expression.walk()):
        return expression
    expression = expression.copy()
    existing = tuple(expression.meta.get(JOIN_STAGES, ()))
    stages = _Stages(
        len(existing), {cte.alias_or_name.casefold() for cte in expression.find_all(exp.CTE)}
    )
    for node in [n for n in expression.walk() if wanted(n)]:
        target: EncryptionTarget = node.meta[ENCLAVE]
        if isinstance(node, exp.In):
            _in_subquery(node, target, stages)
        else:
            assert isinstance(node, exp.EQ)
            _correlated_equality(node, target, stages)
    if stages.stages:
        expression.meta[JOIN_STAGES] = existing + tuple(stages.stages)
        reads = tuple(expression.meta.get(SIDE_READS, ()))
        expression.meta[SIDE_READS] = reads + tuple(stages.side_reads)
    return expression

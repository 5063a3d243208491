"""Rewrite rule: GROUP BY and DISTINCT on enclave columns below the outermost SELECT (in a
subquery, a CTE or a set operation's branch) group on group ids read in stage zero.

Stage zero reads the key's table; the host appends the enclave's group ids over the key's cells
(equal values, equal ids, ascending with the values; NULL stays NULL) and registers the rows as
a view, which the query reads in place of the table, grouping on the ids and passing each key's
cells on with ``ANY_VALUE``. It must not group, sort or compare ciphertext itself, and refuses
(NotSupportedError) what does not fit instead of changing the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.enclave_grouping_common import distinct_to_group
from engine.sql.enclave_grouping_common import refuse_in_enclave as _refuse
from engine.sql.plan import EnclaveOperation, EncryptionTarget, GroupStage
from engine.sql.resolve_columns import TARGET
from engine.sql.rewrite_enclave_joins import JOIN_STAGES, side_read
from engine.types import parse_sql_type

__all__ = ["GROUP_STAGES", "GROUP_STAGE_READS", "rewrite_enclave_nested_grouping"]

# Root meta: the GroupStage records, and their reads as trees (describe renders them after the
# predicate rewrite, since their WHERE terms may be enclave comparisons).
GROUP_STAGES = "ae_enclave_group_stages"
GROUP_STAGE_READS = "ae_enclave_group_stage_reads"


def _inside_aggregate(node: exp.Expr, select: exp.Select) -> bool:
    parent = node.parent
    while parent is not None and parent is not select:
        if isinstance(parent, exp.AggFunc):
            return True
        parent = parent.parent
    return False


def _encrypted_keys(select: exp.Select) -> list[exp.Column]:
    """The enclave-marked GROUP BY keys and DISTINCT projections of this SELECT itself."""
    keys: list[exp.Column] = []
    group = select.args.get("group")
    for key in group.expressions if group is not None else []:
        if key.meta.get(ENCLAVE) is not None:
            if not isinstance(key, exp.Column):
                raise _refuse(key.meta[ENCLAVE], "GROUP BY", "needs plain columns as keys")
            keys.append(key)
    if select.args.get("distinct") is not None:
        for projection in select.selects:
            column = projection.unalias()
            if column.meta.get(ENCLAVE) is not None:
                if not isinstance(column, exp.Column):
                    raise _refuse(column.meta[ENCLAVE], "DISTINCT", "needs plain columns")
                keys.append(column)
    return keys


@dataclass
class _Stages:
    """The stage-zero reads so far; calls are numbered after the equi-join stages."""

    first_call: int
    cte_names: set[str]
    stages: list[GroupStage] = field(default_factory=list)
    reads: list[exp.Select] = field(default_factory=list)
    calls: int = 0

    def add(
        self, select: exp.Select, table: exp.Table, columns: list[tuple[str, EncryptionTarget]]
    ) -> list[str]:
        """A stage reading ``table`` with group ids over ``columns``; the id column names."""
        number = len(self.stages)
        view = f"__ee_group_{number}"
        # Only the rows that pass the SELECT's own WHERE terms on this table reach the enclave.
        read = side_read(select, table, table.alias_or_name.casefold())
        self.reads.append(read)
        id_columns: list[str] = []
        operations: list[EnclaveOperation] = []
        for _, target in columns:
            id_columns.append(f"__ee_group_id_{number}_{len(id_columns)}")
            operations.append(
                EnclaveOperation(
                    target,
                    "GROUP",
                    parse_sql_type(target.declared_type).form.name,
                    (),
                    None,
                    "GROUP BY",
                    result_column=self.first_call + self.calls,
                    stage=0,
                )
            )
            self.calls += 1
        self.stages.append(
            GroupStage(
                to_sql(read),
                view,
                tuple(name for name, _ in columns),
                tuple(id_columns),
                tuple(operations),
            )
        )
        alias = table.alias or table.name
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        table.set("this", exp.to_identifier(view))
        table.set("db", None)
        table.set("catalog", None)
        return id_columns


def _sources(select: exp.Select) -> dict[str, exp.Expr]:
    """The FROM clause's and joins' sources, by alias (or name)."""
    found: dict[str, exp.Expr] = {}
    sources = [select.args["from_"].this] if select.args.get("from_") is not None else []
    sources += [join.this for join in select.args.get("joins") or []]
    for source in sources:
        found[source.alias_or_name.casefold()] = source
    return found


def _named_projection(select: exp.Select, key: exp.Expr) -> exp.Expr | None:
    """The SELECT-list item an ORDER BY key names by position or output alias, if any."""
    if isinstance(key, exp.Literal) and key.is_int:
        index = int(key.this) - 1
        return select.selects[index] if 0 <= index < len(select.selects) else None
    if isinstance(key, exp.Column) and not key.table:
        name = key.name.casefold()
        return next((p for p in select.selects if p.alias_or_name.casefold() == name), None)
    return None


def _rewrite_select(select: exp.Select, stages: _Stages) -> None:
    keys = _encrypted_keys(select)
    if not keys:
        return
    target: EncryptionTarget = keys[0].meta[ENCLAVE]
    for clause in ("qualify", "windows"):
        if select.args.get(clause):
            raise _refuse(target, "GROUP BY", f"cannot be combined with {clause.upper()}")
    if select.args.get("distinct") is not None:
        distinct_to_group(select, target)
    sources = _sources(select)
    by_table: dict[str, list[tuple[str, EncryptionTarget]]] = {}
    for key in keys:
        key_target: EncryptionTarget = key.meta.get(TARGET) or key.meta[ENCLAVE]
        source = sources.get(key.table.casefold())
        if (
            not isinstance(source, exp.Table)
            or source.name.casefold() in stages.cte_names
            or source.name.casefold() != key_target.table.casefold()
        ):
            raise _refuse(
                key_target,
                "GROUP BY and DISTINCT",
                "below the outermost SELECT need the key to be a column of a table in the "
                "same SELECT's FROM clause (not of a subquery or CTE)",
            )
        names = by_table.setdefault(key.table.casefold(), [])
        if key.name.casefold() not in [n.casefold() for n, _ in names]:
            names.append((key.name, key_target))
    ids: dict[tuple[str, str], str] = {}
    for alias, columns in by_table.items():
        source = sources[alias]
        assert isinstance(source, exp.Table)
        for (name, _), id_column in zip(columns, stages.add(select, source, columns), strict=True):
            ids[(alias, name.casefold())] = id_column

    def id_of(column: exp.Expr) -> str | None:
        if not isinstance(column, exp.Column):
            return None
        return ids.get((column.table.casefold(), column.name.casefold()))

    order = select.args.get("order")
    for ordered in order.expressions if order is not None else []:
        named = _named_projection(select, ordered.this)
        sort_key = named.unalias() if named is not None else ordered.this
        sort_ids = id_of(sort_key)
        if sort_ids is not None:
            # The ids ascend with the values, so sorting by them sorts by the key.
            assert isinstance(sort_key, exp.Column)
            ordered.set("this", exp.column(sort_ids, table=sort_key.table))
            ordered.meta.pop(ENCLAVE, None)

    for index, projection in enumerate(select.selects):
        if not isinstance(projection, exp.Alias) and isinstance(projection, exp.Column):
            # Keep the output name: the key becomes ANY_VALUE(key) below.
            if id_of(projection) is not None:
                select.expressions[index] = exp.alias_(projection.copy(), projection.name)

    def substitute(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Column) or node.parent_select is not select:
            return node
        id_column = id_of(node)
        if id_column is None:
            return node
        node.meta.pop(ENCLAVE, None)
        if isinstance(node.parent, exp.Group):
            return exp.column(id_column, table=node.table)
        if _inside_aggregate(node, select):
            return node
        # A group's key: every row of the group holds a cell of the same value.
        return exp.func("ANY_VALUE", node.copy())

    select.transform(substitute, copy=False)


def rewrite_enclave_nested_grouping(expression: exp.Expr) -> exp.Expr:
    """Group on stage-zero group ids in every SELECT below the outermost one (a new tree).

    >>> from sqlglot import parse_one
    >>> sql = "SELECT COUNT(*) FROM (SELECT DISTINCT t.x AS x FROM t AS t) AS s"
    >>> tree = parse_one(sql, read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> column = tree.find(exp.Subquery).find(exp.Column)
    >>> column.meta[TARGET] = column.meta[ENCLAVE] = target
    >>> staged = rewrite_enclave_nested_grouping(tree)
    >>> staged.sql("duckdb")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT COUNT(*) FROM (SELECT ANY_VALUE(t.x) AS x FROM __ee_group_0 AS t
     GROUP BY t.__ee_group_id_0_0) AS s'
    >>> [(s.sql, s.columns) for s in staged.meta[GROUP_STAGES]]
    [('SELECT * FROM t AS t', ('x',))]
    """
    root_select = expression if isinstance(expression, exp.Select) else None
    selects = [
        node
        for node in expression.find_all(exp.Select)
        if node is not root_select and _encrypted_keys(node)
    ]
    if not selects:
        return expression
    expression = expression.copy()
    root_select = expression if isinstance(expression, exp.Select) else None
    stages = _Stages(
        first_call=len(expression.meta.get(JOIN_STAGES, ())),
        cte_names={cte.alias_or_name.casefold() for cte in expression.find_all(exp.CTE)},
    )
    for node in list(expression.find_all(exp.Select)):
        if node is not root_select:
            _rewrite_select(node, stages)
    expression.meta[GROUP_STAGES] = tuple(stages.stages)
    expression.meta[GROUP_STAGE_READS] = tuple(stages.reads)
    return expression

"""Rewrite rule: GROUP BY and DISTINCT over RANDOMIZED enclave-enabled columns, as two stages.

Stage one is the statement's FROM and WHERE with every column the rest needs in its SELECT list
(``__ee_c<k>``), plus each encrypted group key's cells again (``__ee_g<k>``), which the host
swaps for the enclave's group ids (equal values, equal ids, in ascending value order). Stage two,
kept as text in the root's meta, groups stage one's rows by those ids in DuckDB, with
``ANY_VALUE`` of the key's cells as its output. It must not group or sort ciphertext itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlglot import exp

from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.enclave_grouping_common import distinct_to_group
from engine.sql.enclave_grouping_common import refuse_in_enclave as _refuse
from engine.sql.plan import EnclaveOperation, EncryptionTarget, ResultColumn
from engine.sql.resolve_columns import TARGET, origin
from engine.sql.rewrite_enclave_aggregates import AGGREGATE
from engine.sql.rewrite_enclave_having import SORT_BY_GROUP_ID
from engine.sql.rewrite_enclave_joins import JOIN_STAGES, SIDE_READS
from engine.sql.rewrite_enclave_nested_grouping import GROUP_STAGE_READS, GROUP_STAGES
from engine.sql.rewrite_enclave_order import EXTRA, FINISH, RANK, STAGE_VIEW
from engine.sql.rewrite_enclave_set_operations import SET_OPERATION
from engine.types import parse_sql_type

__all__ = ["FINAL", "GROUP", "RESULTS", "STAGE_TWO_CALLS", "rewrite_enclave_grouping"]

# Projection meta of stage one: the GROUP operation of an added group-id column.
GROUP = "ae_enclave_group"
# Root meta: the final output's ResultColumns (stage two's), and the aggregates stage two runs.
RESULTS = "ae_enclave_results"
STAGE_TWO_CALLS = "ae_enclave_stage_two"
# Root meta: stage three's text (Plan.final_sql), when HAVING or ORDER BY use enclave aggregates.
FINAL = "ae_enclave_final"


def _inside_aggregate(node: exp.Expr) -> bool:
    """Inside an aggregate call (LIST is how rewrite_enclave_aggregates collects cells)."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.AggFunc) or (
            isinstance(parent, exp.Anonymous) and str(parent.this).upper() == "LIST"
        ):
            return True
        parent = parent.parent
    return False


def _plain_copy(column: exp.Expr) -> exp.Expr:
    """A copy without the classifier's enclave mark: stage one only passes the cells along."""
    copied = column.copy()
    for node in copied.walk():
        node.meta.pop(ENCLAVE, None)
    return copied


def _keys(select: exp.Select) -> list[exp.Expr]:
    group = select.args.get("group")
    return list(group.expressions) if group is not None else []


def rewrite_enclave_grouping(expression: exp.Expr) -> exp.Expr:
    """Split a SELECT that groups by (or DISTINCTs) an enclave column into two stages.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT x, COUNT(*) AS n FROM t WHERE id > 1 GROUP BY x", read="duckdb")
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> for column in tree.find_all(exp.Column):
    ...     if column.name == "x":
    ...         column.meta[TARGET] = target
    ...         column.meta[ENCLAVE] = target
    >>> staged = rewrite_enclave_grouping(tree)
    >>> staged.sql("duckdb")
    'SELECT x AS __ee_c0, x AS __ee_g0 FROM t WHERE id > 1'
    >>> staged.meta[FINISH]
    'SELECT ANY_VALUE(__ee_c0) AS "x", COUNT(*) AS n FROM __ee_stage GROUP BY __ee_g0'
    """
    if not isinstance(expression, exp.Select):
        return expression
    marked = [
        node
        for node in expression.find_all(exp.Column)
        if node.meta.get(ENCLAVE) is not None
        and (
            isinstance(node.parent, exp.Group)
            or (expression.args.get("distinct") is not None and node.parent_select is expression)
        )
    ]
    if not marked:
        return expression
    expression = expression.copy()
    target: EncryptionTarget = marked[0].meta[ENCLAVE]
    # What EXPLAIN names the GROUP calls: a set operation's own name when the statement is one.
    construct = str(expression.meta.get(SET_OPERATION, "GROUP BY"))
    if expression.args.get("distinct") is not None:
        distinct_to_group(expression, target)
    for key in ("qualify", "windows"):
        if expression.args.get(key):
            raise _refuse(target, "GROUP BY", f"cannot be combined with {key.upper()}")
    for key in ("limit", "offset"):
        node = expression.args.get(key)
        if node is not None and node.find(exp.Placeholder) is not None:
            raise _refuse(target, "GROUP BY", f"needs a literal {key.upper()}, not a ? parameter")
    keys = _keys(expression)
    if not all(isinstance(k, exp.Column) for k in keys):
        raise _refuse(target, "GROUP BY", "needs plain columns as grouping keys")
    stage_two_parts = [expression.args.get(k) for k in ("having", "order")]
    if any(
        part is not None and part.find(exp.Subquery, exp.Exists) is not None
        for part in [*expression.selects, *stage_two_parts]
    ):
        raise _refuse(target, "GROUP BY", "cannot be combined with subqueries in SELECT")

    results = _result_columns(expression)
    staged: dict[str, exp.Expr] = {}  # column SQL -> stage-one column name
    group_ids: dict[str, str] = {}  # column SQL of an encrypted key -> group id column
    stage_one: list[exp.Expr] = []
    operations: list[tuple[int, EnclaveOperation]] = []

    def stage_column(column: exp.Column) -> str:
        text = column.sql("duckdb")
        if text not in staged:
            name = f"__ee_c{len(staged)}"
            staged[text] = exp.column(name)
            projection = exp.alias_(_plain_copy(column), name)
            projection.meta[EXTRA] = True
            stage_one.append(projection)
        return staged[text].name

    for group_key in keys:
        assert isinstance(group_key, exp.Column)
        stage_column(group_key)
        enclave_target = group_key.meta.get(ENCLAVE)
        if enclave_target is not None:
            name = f"__ee_g{len(group_ids)}"
            group_ids[group_key.sql("duckdb")] = name
            projection = exp.alias_(_plain_copy(group_key), name)
            projection.meta[EXTRA] = True
            projection.meta[GROUP] = True
            operations.append(
                (
                    len(stage_one),
                    EnclaveOperation(
                        enclave_target,
                        "GROUP",
                        parse_sql_type(enclave_target.declared_type).form.name,
                        (),
                        None,
                        construct,
                    ),
                )
            )
            stage_one.append(projection)

    finish = expression.copy()
    finish.set("from_", exp.From(this=exp.to_table(STAGE_VIEW)))
    for key in ("joins", "where", "with_", "laterals"):
        finish.set(key, None)

    aliases = {p.alias.casefold(): p.this for p in finish.selects if isinstance(p, exp.Alias)}

    def substitute(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Column) or node.parent_select is not finish:
            return node
        if (
            not node.table
            and node.name.casefold() in aliases
            and node.find_ancestor(exp.Order, exp.Having)
        ):
            # An output alias named in ORDER BY or HAVING: stage two has it, except that an
            # encrypted key sorts by its group ids (they ascend with the values).
            named = aliases[node.name.casefold()]
            key_text = named.sql("duckdb") if isinstance(named, exp.Column) else None
            if key_text in group_ids:
                return exp.column(group_ids[key_text])
            return node
        text = node.sql("duckdb")
        name = stage_column(node)
        in_group = isinstance(node.parent, exp.Group)
        if text in group_ids:
            if in_group:
                return exp.column(group_ids[text])
            if not _inside_aggregate(node):
                if node.find_ancestor(exp.Order) is not None:
                    return exp.column(group_ids[text])  # ids ascend with the values
                return exp.func("ANY_VALUE", exp.column(name))
        return exp.column(name)

    moved_placeholders = 0

    def move_placeholder(node: exp.Expr) -> exp.Expr:
        # Stage two runs without parameters: a ? (a plaintext HAVING term's value, or a role
        # marker of a HAVING comparison) becomes a stage-one column, constant in every group.
        nonlocal moved_placeholders
        name = f"__ee_v{moved_placeholders}"
        moved_placeholders += 1
        projection = exp.alias_(node.copy(), name)
        projection.meta[EXTRA] = True
        stage_one.append(projection)
        if _inside_aggregate(node):
            return exp.column(name)
        return exp.func("ANY_VALUE", exp.column(name))

    def substitute_all(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder):
            return move_placeholder(node)
        if (
            isinstance(node, exp.Column)
            and isinstance(node.parent, exp.Alias)
            and node.parent.meta.get(SORT_BY_GROUP_ID) in group_ids
        ):
            # A sort key of stage three (rewrite_enclave_having): the group ids, not the cells.
            return exp.column(group_ids[node.parent.meta[SORT_BY_GROUP_ID]])
        return substitute(node)

    transformed = finish.transform(substitute_all, copy=False)
    assert isinstance(transformed, exp.Select)
    finish = transformed
    # Projections keep their output names: alias each one that has none left.
    for index, projection in enumerate(finish.selects):
        if not isinstance(projection, exp.Alias):
            projection.replace(exp.alias_(projection, results[index].name, quoted=True))
    aggregates = []
    for projection in expression.selects:
        aggregate = projection.meta.get(AGGREGATE)
        if isinstance(aggregate, EnclaveOperation):
            aggregates.append(replace(aggregate, stage=2))
    # ORDER BY an enclave aggregate (rewrite_enclave_having): rank its result cells after the
    # aggregate calls, since the ranks replace the cells the aggregate call puts in the column.
    for projection in expression.selects:
        ranked = projection.meta.get(RANK)
        if isinstance(ranked, EnclaveOperation):
            aggregates.append(replace(ranked, stage=2))
    stage = exp.select(*stage_one)
    stage.set("from_", expression.args.get("from_"))
    for key in ("joins", "where", "with_", "laterals"):
        if expression.args.get(key) is not None:
            stage.set(key, expression.args[key])
    for position, operation in operations:
        projection = stage.selects[position]
        projection.meta[GROUP] = _with_column(operation, position)
    stage.meta[FINISH] = to_sql(finish)
    for key in (JOIN_STAGES, SIDE_READS, GROUP_STAGES, GROUP_STAGE_READS):
        # Stage-zero reads of earlier rules belong to the statement, whichever root it has.
        if key in expression.meta:
            stage.meta[key] = expression.meta[key]
    if expression.meta.get(FINISH) is not None:
        # rewrite_enclave_having's stage (HAVING and ORDER BY over enclave aggregates) runs
        # after stage two's aggregates, as stage three.
        stage.meta[FINAL] = expression.meta[FINISH]
    visible = [not p.meta.get(EXTRA) for p in expression.selects]
    stage.meta[RESULTS] = tuple(r for r, keep in zip(results, visible, strict=True) if keep)
    stage.meta[STAGE_TWO_CALLS] = tuple(aggregates)
    return stage


def _with_column(operation: EnclaveOperation, column: int) -> EnclaveOperation:
    return replace(operation, result_column=column)


def _result_columns(select: exp.Select) -> list[ResultColumn]:
    """The final output's columns, decided on the original SELECT list."""
    columns = []
    for projection in select.selects:
        target, declared = origin(projection)
        aggregate: Any = projection.meta.get(AGGREGATE)
        if isinstance(aggregate, EnclaveOperation):
            declared = aggregate.result_type
            target = EncryptionTarget(
                aggregate.target.table,
                aggregate.target.column,
                aggregate.target.cek_name,
                aggregate.target.encryption_type,
                declared or "",
            )
        if target is None and isinstance(projection.unalias(), exp.Column):
            target = projection.unalias().meta.get(TARGET)
        columns.append(ResultColumn(projection.alias_or_name, declared, target))
    return columns

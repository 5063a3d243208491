"""Rewrite rule: ORDER BY over enclave-enabled columns (RANDOMIZED or DETERMINISTIC), as two stages.

Stage one is the statement without ORDER BY, LIMIT and OFFSET, with each sort key added to the
SELECT list (``__ee_rank_<i>`` for an encrypted column, whose cells the host swaps for the
enclave's dense ranks; ``__ee_key_<i>`` for a plaintext one). With a LIMIT and an encrypted first
key, that key is a TOP_K operation instead: the enclave keeps only the first LIMIT + OFFSET rows
(and their ties) and ranks just those. Stage two, kept as text in the root's meta, sorts and
limits stage one's rows by those columns in DuckDB (a native SELECT DISTINCT sorted by
DETERMINISTIC keys too). A nested query's encrypted ORDER BY is dropped
without LIMIT/OFFSET (it has no effect) and sorts on stage-zero ranks with one. It must not sort
ciphertext, and refuses what it cannot split this way (GROUP BY, DISTINCT, set operations).
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.dialect import to_sql
from engine.sql.parameterize_literals import USER_INDEX
from engine.sql.plan import EnclaveOperation, EncryptionTarget, GroupStage
from engine.sql.resolve_columns import TARGET
from engine.sql.rewrite_enclave_joins import JOIN_STAGES
from engine.sql.rewrite_enclave_nested_grouping import GROUP_STAGES
from engine.types import parse_sql_type

__all__ = ["EXTRA", "FINISH", "RANK", "STAGE_VIEW", "rewrite_enclave_order", "row_count_source"]

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


def row_count_source(clause: exp.Expr | None) -> tuple[str, object] | None:
    """Where a LIMIT or OFFSET count comes from: ``("literal", n)``, ``("user", i)`` for a ``?``
    (``("fixed", 0)`` when the clause is absent: a value no literal of the text holds, so that
    plan templates keep it as it is), or None for any other form.

    >>> from sqlglot import parse_one
    >>> row_count_source(parse_one("SELECT 1 LIMIT 5", read="duckdb").args["limit"])
    ('literal', 5)
    >>> row_count_source(None)
    ('fixed', 0)
    """
    if clause is None:
        return ("fixed", 0)
    value = clause.args.get("expression")
    if isinstance(clause, exp.Limit) and (clause.args.get("offset") or clause.expressions):
        return None  # LIMIT m, n and LIMIT ... BY: keep the full ranking
    if isinstance(value, exp.Literal) and value.is_int:
        return ("literal", int(value.this))
    if isinstance(value, exp.Placeholder) and USER_INDEX in value.meta:
        return ("user", value.meta[USER_INDEX])
    return None


def _same_projection(projections: list[exp.Expr], key: exp.Expr) -> int | None:
    """The index of the SELECT-list item that returns exactly the values of sort key ``key``:
    the same qualified column, or (an unqualified key) the item ``t.key AS key``."""
    if not isinstance(key, exp.Column):
        return None
    for index, projection in enumerate(projections):
        column = projection.unalias()
        if not isinstance(column, exp.Column) or not column.table:
            continue
        if key.table and key == column:
            return index
        if not key.table and column.name == key.name == projection.alias_or_name:
            return index
    return None


def _count_column(clause: exp.Expr, name: str) -> exp.Expr:
    """Stage one's copy of a ``?`` count, as a BIGINT column stage two reads back."""
    extra = exp.alias_(exp.cast(clause.args["expression"].copy(), "BIGINT"), name)
    extra.meta[EXTRA] = True
    return extra


def _encrypted_order(query: exp.Expr) -> bool:
    order = query.args.get("order")
    return order is not None and any(o.meta.get(ENCLAVE) is not None for o in order.expressions)


def _distinct_ok(select: exp.Select) -> bool:
    """SELECT DISTINCT (native, so over plaintext or DETERMINISTIC columns) sorted by
    DETERMINISTIC keys: stage one may add the sort keys as columns, since each is one of the
    SELECT list's items and so does not change which rows are distinct."""
    distinct = select.args["distinct"]
    if distinct.args.get("on") is not None:
        return False
    items = {p.unalias().sql("duckdb") for p in select.selects}
    names = {p.alias_or_name.casefold() for p in select.selects}
    for ordered in select.args["order"].expressions:
        target = ordered.meta.get(ENCLAVE)
        if target is not None and target.encryption_type != "DETERMINISTIC":
            return False
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int:
            continue
        if key.sql("duckdb") in items:
            continue
        if isinstance(key, exp.Column) and not key.table and key.name.casefold() in names:
            continue
        return False
    return True


def _drop_inner_orders(expression: exp.Expr) -> exp.Expr:
    """``expression`` without the encrypted ORDER BYs of nested queries that have no LIMIT or
    OFFSET: SQL gives such an order no effect on the answer (DuckDB does not keep it either), so
    it need not reach the enclave. Nested ORDER BYs that feed a LIMIT are left for the refusal.
    """
    nested = [
        query
        for query in expression.find_all(exp.Query)
        if query is not expression and _encrypted_order(query)
    ]
    if not any(q.args.get("limit") is None and q.args.get("offset") is None for q in nested):
        return expression
    expression = expression.copy()
    for query in list(expression.find_all(exp.Query)):
        if query is expression or not _encrypted_order(query):
            continue
        if query.args.get("limit") is None and query.args.get("offset") is None:
            query.set("order", None)
    return expression


def _base_table(select: exp.Select, column: exp.Expr, cte_names: set[str]) -> exp.Table | None:
    """The base table of ``select``'s FROM or JOIN that ``column`` (an encrypted sort key) reads,
    when the key is a plain column of it; None for anything else (a CTE, a subquery, a view)."""
    target = column.meta.get(TARGET)
    if not isinstance(column, exp.Column) or target is None:
        return None
    if not column.table:
        # ORDER BY an output name: the SELECT-list column it names.
        named = [p.unalias() for p in select.selects if p.alias_or_name == column.name]
        if len(named) != 1 or not isinstance(named[0], exp.Column) or not named[0].table:
            return None
        column = named[0]
    sources = [select.args["from_"].this] if select.args.get("from_") is not None else []
    sources += [join.this for join in select.args.get("joins") or []]
    for source in sources:
        if source.alias_or_name.casefold() != column.table.casefold():
            continue
        if (
            isinstance(source, exp.Table)
            and source.name.casefold() == target.table.casefold()
            and source.name.casefold() not in cte_names
        ):
            return source
    return None


def _nested_order_stages(expression: exp.Expr) -> exp.Expr:
    """Nested SELECTs whose encrypted ORDER BY feeds a LIMIT or OFFSET read their table through
    a stage-zero view (a GroupStage) with the enclave's dense ranks over the key's cells, and
    sort on those ranks in DuckDB. The ranks cover the whole table's column."""
    cte_names = {cte.alias_or_name.casefold() for cte in expression.find_all(exp.CTE)}
    nested = [
        query
        for query in expression.find_all(exp.Select)
        if query is not expression and _encrypted_order(query)
    ]
    if not nested:
        return expression
    expression = expression.copy()
    stages = list(expression.meta.get(GROUP_STAGES, ()))
    taken = [stage.operation.result_column for stage in expression.meta.get(JOIN_STAGES, ())]
    taken += [operation.result_column for stage in stages for operation in stage.operations]
    next_call = max((n for n in taken if n is not None), default=-1) + 1
    for select in list(expression.find_all(exp.Select)):
        if select is expression or not _encrypted_order(select):
            continue
        keys = [o for o in select.args["order"].expressions if o.meta.get(ENCLAVE) is not None]
        grouped = select.args.get("group") is not None or any(
            p.find(exp.AggFunc) is not None for p in select.selects
        )
        if grouped:
            # A grouped result cannot sort on per-row ranks; only the outermost SELECT's groups
            # are ranked (rewrite_enclave_having). Left for the refusal.
            continue
        tables = [_base_table(select, key.this, cte_names) for key in keys]
        if any(table is None for table in tables):
            continue  # left for the refusal of rewrite_enclave_predicates
        by_table: dict[int, list[exp.Ordered]] = {}
        for key, table in zip(keys, tables, strict=True):
            by_table.setdefault(id(table), []).append(key)
        for table_keys in by_table.values():
            table = _base_table(select, table_keys[0].this, cte_names)
            assert table is not None
            number = len(stages)
            view = f"__ee_order_{number}"
            whole = table.copy()
            whole.set("alias", None)
            alias = table.alias_or_name
            columns: list[str] = []
            id_columns: list[str] = []
            operations: list[EnclaveOperation] = []
            for key in table_keys:
                target: EncryptionTarget = key.meta[ENCLAVE]
                id_column = f"__ee_order_rank_{number}_{len(id_columns)}"
                columns.append(target.column)
                id_columns.append(id_column)
                operations.append(
                    EnclaveOperation(
                        target,
                        "RANK",
                        parse_sql_type(target.declared_type).form.name,
                        (),
                        None,
                        "ORDER BY",
                        result_column=next_call,
                        stage=0,
                    )
                )
                next_call += 1
                key.replace(
                    exp.Ordered(
                        this=exp.column(id_column, table=alias),
                        desc=key.args.get("desc"),
                        nulls_first=key.args.get("nulls_first"),
                    )
                )
            stages.append(
                GroupStage(
                    to_sql(exp.select("*").from_(whole)),
                    view,
                    tuple(columns),
                    tuple(id_columns),
                    tuple(operations),
                )
            )
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
            table.set("this", exp.to_identifier(view))
            table.set("db", None)
            table.set("catalog", None)
    expression.meta[GROUP_STAGES] = tuple(stages)
    return expression


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
    expression = _nested_order_stages(_drop_inner_orders(expression))
    if not _encrypted_order(expression):
        return expression
    expression = expression.copy()
    order = expression.args["order"]
    target: EncryptionTarget = next(
        o.meta[ENCLAVE] for o in order.expressions if o.meta.get(ENCLAVE) is not None
    )
    if not isinstance(expression, exp.Select):
        raise _refuse(target, "runs only on a plain SELECT (not on UNION or other set operations)")
    for key, name in (("group", "GROUP BY"), ("distinct", "DISTINCT"), ("having", "HAVING")):
        if expression.args.get(key) and not (key == "distinct" and _distinct_ok(expression)):
            raise _refuse(target, f"cannot be combined with {name}")
    if any(isinstance(p.unalias(), exp.AggFunc) for p in expression.selects):
        raise _refuse(target, "cannot be combined with aggregates")
    limit = row_count_source(expression.args.get("limit"))
    offset = row_count_source(expression.args.get("offset"))
    # TOP_K when there is a LIMIT the client can read, and the first key is encrypted.
    top_k = (
        expression.args.get("limit") is not None
        and limit is not None
        and offset is not None
        and order.expressions[0].meta.get(ENCLAVE) is not None
    )
    if not top_k:
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
            source = None
            if ranked is not None and top_k and position == 0:
                source = _same_projection(projections, key)
            if source is not None:
                # The key is a result column: stage one returns its cells once, and the ranks
                # take the place of a NULL column.
                extra = exp.alias_(exp.cast(exp.null(), "BIGINT"), name)
                extra.meta[EXTRA] = True
            if ranked is not None and top_k and position == 0:
                assert limit is not None and offset is not None
                flags = (
                    ("fixed", int(bool(ordered.args.get("desc")))),
                    ("fixed", int(bool(ordered.args.get("nulls_first")))),
                )
                extra.meta[RANK] = EnclaveOperation(
                    ranked,
                    "TOP_K",
                    parse_sql_type(ranked.declared_type).form.name,
                    (limit, offset, *flags),
                    None,
                    "ORDER BY ... LIMIT",
                    result_column=len(projections) + len(sort_names),
                    source_column=source,
                )
            elif ranked is not None:
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
    counts: dict[str, exp.Expr] = {}
    for key in ("limit", "offset"):
        clause = expression.args.get(key)
        if clause is not None and top_k and _has_placeholder(clause):
            # A ? count reaches stage two as a stage-one column: stage two runs without
            # parameters, and the client has authorized TOP_K for exactly this value.
            name = f"__ee_{key}"
            expression.append("expressions", _count_column(clause, name))
            sort_names.append(name)
            read_back = exp.select(exp.func("any_value", exp.column(name))).from_(STAGE_VIEW)
            counts[key] = type(clause)(expression=exp.paren(read_back, copy=False))
        elif clause is not None:
            counts[key] = clause.copy()
        expression.set(key, None)
    finish = exp.select(exp.Star(except_=[exp.column(n) for n in sort_names])).from_(STAGE_VIEW)
    finish.set("order", exp.Order(expressions=finish_order))
    for key, clause in counts.items():
        finish.set(key, clause)
    expression.set("order", None)
    expression.meta[FINISH] = to_sql(finish)
    return expression

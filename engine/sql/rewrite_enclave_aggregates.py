"""Rewrite rule: enclave aggregates (SUM, AVG, MIN, MAX, COUNT(DISTINCT)) become LIST(cells).

DuckDB still filters, groups (on plaintext or deterministic keys), sorts and limits; each marked
aggregate of the outermost SELECT list collects its group's cells with ``LIST`` (SUM or AVG of
arithmetic: one ``STRUCT_PACK`` of its columns per row; several SUM and AVG: one shared list of
their distinct operands), and the host hands the lists to the enclave, which returns one cell
per group. It must not rewrite an aggregate whose value DuckDB would still compute with.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.classify_encrypted_operations import ENCLAVE
from engine.sql.compile_aggregate_expression import compile_aggregate_expression
from engine.sql.plan import EnclaveOperation, EncryptionTarget, ExpressionSlot
from engine.types import NormalizationForm, parse_sql_type

__all__ = [
    "AGGREGATE",
    "SHARED_PREFIX",
    "aggregate_operator",
    "parse_shared_slot_name",
    "rewrite_enclave_aggregates",
    "result_type",
    "shared_slot_name",
]

# Set on the rewritten projection: its EnclaveOperation (with result_column).
AGGREGATE = "ae_enclave_aggregate"
# The field names of a shared operand column start with this (see shared_slot_name).
SHARED_PREFIX = "__ee_s"

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


def _check_uses(root: exp.Query, names: set[str], target: EncryptionTarget, what: str) -> None:
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
) -> tuple[EnclaveOperation, list[exp.Expr]]:
    """The SUM_EXPR or AVG_EXPR operation of an arithmetic argument, and the expression of each
    of its program's slots (encrypted columns as they are, plaintext ones cast)."""
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
        column.copy() if slot.target is not None else _plain_slot(column, slot)
        for slot, column in zip(expression.slots, columns, strict=True)
    ]
    return operation, fields


def _packed_rows(fields: list[exp.Expr], names: list[str]) -> exp.Expr:
    """``LIST(STRUCT_PACK(name := field, ...))``: one struct per row, so slots stay aligned."""
    packed = exp.Anonymous(
        this="STRUCT_PACK",
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier(name), expression=field)
            for name, field in zip(names, fields, strict=True)
        ],
    )
    return exp.Anonymous(this="LIST", expressions=[packed])


def shared_slot_name(readers: list[tuple[int, int]]) -> str:
    """The struct field name of a shared stage slot: every (result column, operand) that reads
    it, so the host can rebuild each aggregate's operands (see parse_shared_slot_name).

    >>> shared_slot_name([(2, 0), (5, 1)])
    '__ee_s_2_0_5_1'
    """
    return SHARED_PREFIX + "".join(f"_{column}_{operand}" for column, operand in readers)


def parse_shared_slot_name(name: str) -> list[tuple[int, int]] | None:
    """The readers a shared slot's field name lists; None for any other name.

    >>> parse_shared_slot_name("__ee_s_2_0_5_1"), parse_shared_slot_name("s0")
    ([(2, 0), (5, 1)], None)
    """
    if not name.startswith(SHARED_PREFIX + "_"):
        return None
    numbers = name[len(SHARED_PREFIX) + 1 :].split("_")
    if len(numbers) % 2 or not all(number.isdigit() for number in numbers):
        return None
    values = [int(number) for number in numbers]
    return list(zip(values[0::2], values[1::2], strict=True))


def _share_slots(
    shared: list[tuple[exp.Expr, EnclaveOperation, list[exp.Expr], list[str]]],
) -> None:
    """Collect the operands of several SUM and AVG aggregates of one SELECT in one column.

    The first aggregate's item becomes ``LIST(STRUCT_PACK(...))`` with one field per distinct
    operand (an encrypted column read by three aggregates is one field, so DuckDB builds one
    list of it and the enclave decrypts it once); the others become ``NULL`` placeholders that
    the host fills with their result cells.
    """
    fields: dict[tuple[str, ...], tuple[exp.Expr, list[tuple[int, int]]]] = {}
    for _, operation, operands, keys in shared:
        assert operation.result_column is not None
        for position, (operand, key) in enumerate(zip(operands, keys, strict=True)):
            entry = fields.setdefault((key, operand.sql("duckdb")), (operand, []))
            entry[1].append((operation.result_column, position))
    names = [shared_slot_name(readers) for _, readers in fields.values()]
    holder = _packed_rows([operand for operand, _ in fields.values()], names)
    for number, (node, _, _, _) in enumerate(shared):
        node.replace(holder if number == 0 else exp.cast(exp.null(), "BLOB"))


def _rewrite_select(
    select: exp.Select, nodes: list[exp.Expr], share: bool = False
) -> dict[str, tuple[EnclaveOperation, exp.Expr]]:
    """Turn the marked aggregates that are whole items of ``select``'s list into LIST columns.

    Returns each rewritten item's output name (casefolded) with its operation (``result_column``
    is the item's index in ``select``) and the item; refuses any other use of an aggregate.
    With ``share`` (the outermost SELECT), two or more SUM and AVG aggregates collect their
    operands in one shared column instead (see _share_slots).
    """
    rewritten: dict[str, tuple[EnclaveOperation, exp.Expr]] = {}
    # SUM and AVG aggregates: (node, operation, operand expressions, operand type keys).
    sums: list[tuple[exp.Expr, EnclaveOperation, list[exp.Expr], list[str]]] = []
    for node in nodes:
        target = node.meta[ENCLAVE]
        operator = _OPERATORS[type(node)]
        construct = _CONSTRUCTS[operator]
        item = _top_level_projection(node, select)
        if item is None:
            raise _refuse(
                target,
                construct,
                "runs only as a whole item of the outermost SELECT list, or of the list of a "
                "subquery or CTE whose result the outer query only selects (not inside an "
                "expression, HAVING or ORDER BY)",
            )
        if select.args.get("distinct"):
            raise _refuse(target, construct, "cannot be combined with SELECT DISTINCT")
        index = list(select.expressions).index(item)
        argument = node.this
        while isinstance(argument, exp.Paren):
            argument = argument.this
        if operator in ("SUM", "AVG") and not isinstance(argument, exp.Column):
            # Arithmetic inside SUM or AVG: the enclave evaluates it row by row.
            operation, fields = _expression_aggregate(operator, argument, index)
            rewritten[item.alias_or_name.casefold()] = (operation, item)
            assert operation.expression is not None
            keys = [slot.type_form for slot in operation.expression.slots]
            sums.append((node, operation, fields, keys))
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
        rewritten[item.alias_or_name.casefold()] = (operation, item)
        if operator in ("SUM", "AVG"):
            sums.append((node, operation, [column.copy()], [operation.type_form]))
            continue
        node.replace(exp.Anonymous(this="LIST", expressions=[column.copy()]))
    if share and len(sums) >= 2:
        _share_slots(sums)
    else:
        for node, operation, operands, _ in sums:
            if operation.expression is None:
                node.replace(exp.Anonymous(this="LIST", expressions=operands))
            else:
                node.replace(_packed_rows(operands, [f"s{i}" for i in range(len(operands))]))
    _check_uses(select, set(rewritten), nodes[0].meta[ENCLAVE], "an aggregate")
    return rewritten


def _source_name(select: exp.Select, root: exp.Expr) -> str | None:
    """The name under which the outermost SELECT reads ``select``, when it reads it directly.

    That is the alias of a derived table in root's FROM or JOIN list, or the name of a CTE of
    root's WITH that root's FROM or JOIN list names exactly once and nothing else names.
    """
    if not isinstance(root, exp.Select) or select is root:
        return None
    sources = [root.args["from_"].this] if root.args.get("from_") is not None else []
    sources += [join.this for join in root.args.get("joins") or []]
    parent = select.parent
    if isinstance(parent, exp.Subquery):
        return parent.alias_or_name.casefold() if parent in sources else None
    if isinstance(parent, exp.CTE) and parent.parent is root.args.get("with_"):
        name = parent.alias_or_name.casefold()
        readers = [t for t in root.find_all(exp.Table) if t.name.casefold() == name]
        if len(readers) == 1 and readers[0] in sources:
            return readers[0].alias_or_name.casefold()
    return None


def _hoist(
    root: exp.Select, source: str, inner: dict[str, tuple[EnclaveOperation, exp.Expr]]
) -> None:
    """Mark root's items that pass an inner aggregate through; refuse any other use of one.

    Root only carries the inner ``LIST`` column to its output, where the host hands it to the
    enclave as it does an outermost aggregate's: DuckDB never filters, sorts or computes on it.
    """
    first = next(iter(inner.values()))[0]
    passed: set[str] = set()
    for column in list(root.find_all(exp.Column)):
        if column.table.casefold() != source or column.name.casefold() not in inner:
            continue
        if column.parent_select is not root:
            raise _refuse(first.target, first.construct, _PASS_THROUGH_ONLY)
        operation, _ = inner[column.name.casefold()]
        item = _top_level_projection(column, root)
        if item is None:
            raise _refuse(operation.target, operation.construct, _PASS_THROUGH_ONLY)
        if root.args.get("distinct") or root.args.get("group"):
            raise _refuse(
                operation.target,
                operation.construct,
                "below the outermost SELECT cannot be passed through its DISTINCT or GROUP BY",
            )
        index = list(root.expressions).index(item)
        item.meta[AGGREGATE] = replace(operation, result_column=index)
        passed.add(item.alias_or_name.casefold())
    _check_uses(root, passed, first.target, "an aggregate of a subquery")


_PASS_THROUGH_ONLY = (
    "in a subquery or CTE gives ciphertext; the outer query may only select its result "
    "(not compare, compute, join, group or sort with it)"
)


def _union_all_branches(query: exp.Expr) -> list[exp.Select] | None:
    """The SELECT branches of a tree of ``UNION ALL``s, left to right; None for anything else."""
    if isinstance(query, exp.Select):
        return [query]
    if not isinstance(query, exp.Union) or query.args.get("distinct"):
        return None
    left, right = _union_all_branches(query.this), _union_all_branches(query.expression)
    return None if left is None or right is None else left + right


def _same_aggregate(first: EnclaveOperation, other: EnclaveOperation) -> bool:
    """Whether ``other`` may be finished as ``first``: same key, type and work, any column."""
    return (
        other.target.cek_name == first.target.cek_name
        and other.target.declared_type == first.target.declared_type
        and replace(other, target=first.target) == first
    )


def _rewrite_branches(
    expression: exp.Expr, by_select: dict[int, tuple[exp.Select | None, list[exp.Expr]]]
) -> bool:
    """Aggregates in the branches of an outermost ``UNION ALL``: each branch collects its cells,
    and the host finishes each output column as the first branch's aggregate, so every branch
    must have the same aggregate (same key, type and operator) in that column. False when
    ``expression`` is no such set operation.
    """
    branches = _union_all_branches(expression)
    if branches is None or len(branches) < 2:
        return False
    if any(id(select) not in {id(b) for b in branches} for select, _ in by_select.values()):
        return False  # an aggregate deeper than a branch's own list: refused by the caller
    results = [
        _rewrite_select(branch, by_select[id(branch)][1]) if id(branch) in by_select else {}
        for branch in branches
    ]
    by_position = [
        {operation.result_column: (operation, item) for operation, item in found.values()}
        for found in results
    ]
    assert isinstance(expression, exp.Query)
    first_branch = by_position[0]
    for position in set().union(*by_position):
        found = [positions.get(position) for positions in by_position]
        known = next(entry for entry in found if entry is not None)[0]
        if any(entry is None or not _same_aggregate(known, entry[0]) for entry in found):
            raise _refuse(
                known.target,
                known.construct,
                "in a UNION ALL branch needs the same aggregate (same key, type and operator) "
                "in that column of every branch",
            )
        operation, item = first_branch[position]
        item.meta[AGGREGATE] = operation
    names = {item.alias_or_name.casefold() for _, item in first_branch.values()}
    first = next(iter(first_branch.values()))[0]
    _check_uses(expression, names, first.target, "an aggregate of a UNION ALL branch")
    return True


def rewrite_enclave_aggregates(expression: exp.Expr) -> exp.Expr:
    """Replace each enclave-marked aggregate of a SELECT list by ``LIST(column)``.

    The outermost SELECT's projection gets ``meta[AGGREGATE]``: an EnclaveOperation with the
    result column's index and the result's declared type in ``result_type``. An aggregate of a
    subquery or CTE that the outermost SELECT reads directly is rewritten too when the outer query
    only selects its result: the outer item that passes it through gets the operation. Anywhere
    else (HAVING, ORDER BY, an expression around it, an outer comparison) it is refused with
    NotSupportedError. In the branches of an outermost ``UNION ALL``, each output column holding
    an aggregate must hold the same one in every branch; the first branch's item gets it.

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
    >>> tree = parse_one("SELECT v.s FROM (SELECT g, MAX(x) AS s FROM t GROUP BY g) AS v")
    >>> tree.find(exp.Max).meta[ENCLAVE] = target
    >>> rewritten = rewrite_enclave_aggregates(tree)
    >>> rewritten.sql("duckdb")
    'SELECT v.s FROM (SELECT g, LIST(x) AS s FROM t GROUP BY g) AS v'
    >>> operation = rewritten.selects[0].meta[AGGREGATE]
    >>> operation.operator, operation.result_column, operation.result_type
    ('MAX', 0, 'INTEGER')
    """
    if not any(node.meta.get(ENCLAVE) is not None for node in expression.find_all(*_OPERATORS)):
        return expression
    expression = expression.copy()
    by_select: dict[int, tuple[exp.Select | None, list[exp.Expr]]] = {}
    for node in expression.find_all(*_OPERATORS):
        if node.meta.get(ENCLAVE) is not None:
            select = node.parent_select
            entry = by_select.setdefault(id(select), (select, []))
            entry[1].append(node)
    if _rewrite_branches(expression, by_select):
        return expression
    # The inner SELECTs first, so that the outermost one's items are known when it is checked.
    for select, nodes in by_select.values():
        if select is expression:
            continue
        target = nodes[0].meta[ENCLAVE]
        construct = _CONSTRUCTS[_OPERATORS[type(nodes[0])]]
        source = _source_name(select, expression) if select is not None else None
        if select is None or source is None:
            raise _refuse(
                target,
                construct,
                "runs only in the outermost SELECT or in a subquery or CTE that the outermost "
                "SELECT reads directly in its FROM clause, or in a branch of an outermost UNION "
                "ALL (not in a UNION, INTERSECT or EXCEPT branch, a deeper subquery, or a CTE "
                "read more than once)",
            )
        inner = _rewrite_select(select, nodes)
        assert isinstance(expression, exp.Select)
        _hoist(expression, source, inner)
    outer = by_select.get(id(expression))
    if outer is not None:
        assert isinstance(expression, exp.Select)
        for operation, item in _rewrite_select(expression, outer[1], share=True).values():
            item.meta[AGGREGATE] = operation
    return expression

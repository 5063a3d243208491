"""Result column names as DuckDB gives them, for queries the engine rewrites.

DuckDB names an unaliased select expression after its parsed form (``min(n)``, ``(n + 1)``);
the rewritten text the host runs would otherwise name it ``_col_0``. This module renders that
name from the user's own AST. It is pure and never guesses: a form it does not know gives
``None``, and the caller keeps the name it had.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from sqlglot import exp

from engine.sql.plan import ResultColumn

__all__ = [
    "duckdb_column_name",
    "mark_result_names",
    "marked_result_names",
    "name_result_columns",
]

# Projection meta: the DuckDB name of a select-list entry, set before qualification renames
# (and lower-cases) the entry, read after it.
RESULT_NAME = "ae_result_name"

# Binary operators DuckDB prints as "(left OP right)".
_BINARY: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.IntDiv: "//",
    exp.Mod: "%",
    exp.DPipe: "||",
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.Like: "~~",
    exp.ILike: "~~*",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
}
_NEGATED_BINARY: dict[type[exp.Expr], str] = {exp.Like: "!~~", exp.ILike: "!~~*"}
# Functions whose DuckDB name is sqlglot's name in lower case (sqlglot maps several other
# spellings onto one class, such as substr and substring, so those stay unnamed).
_SAME_NAME_FUNCTIONS = (
    exp.Min,
    exp.Max,
    exp.Sum,
    exp.Avg,
    exp.Count,
    exp.Upper,
    exp.Lower,
    exp.Abs,
    exp.Round,
)
# DuckDB prints a CAST's type as its parser read it: the SQL-standard names it knows become
# its own (INT is INTEGER, NUMERIC is DECIMAL, REAL is FLOAT) and the rest stay as written.
_TYPE_NAMES = {
    "INT": "INTEGER",
    "INTEGER": "INTEGER",
    "SMALLINT": "SMALLINT",
    "BIGINT": "BIGINT",
    "TINYINT": "TINYINT",
    "HUGEINT": "HUGEINT",
    "NUMERIC": "DECIMAL",
    "DECIMAL": "DECIMAL",
    "REAL": "FLOAT",
    "FLOAT": "FLOAT",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "VARCHAR": "VARCHAR",
    "TEXT": "TEXT",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP",
    "TIMESTAMPTZ": "TIMESTAMPTZ",
    "BLOB": "BLOB",
    "UUID": "UUID",
}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# DuckDB quotes a name that is any of its keywords (KeywordHelper::RequiresQuotes), whatever the
# category; this is duckdb_keywords() of DuckDB 2.0, and a test keeps it equal to the installed one.
DUCKDB_KEYWORDS = frozenset(
    """
    abort absolute access action add admin after aggregate all also alter always analyse
    analyze and anti any approx array as asc asof assertion assignment asymmetric at attach
    attribute authorization backward before begin between bigint binary bit boolean both by
    cache call called cascade cascaded case cast catalog centuries century chain char
    character characteristics check checkpoint class close cluster coalesce collate
    collation column columns columns comment comments commit committed compression
    concurrently configuration conflict connect connection constraint constraints content
    continue conversion copy cost create cross csv cube current cursor cycle data database
    day days deallocate dec decade decades decimal declare default defaults deferrable
    deferred definer delete delimiter delimiters depends desc describe destroy detach
    dictionary disable discard disconnect distance distinct do document domain double drop
    each else enable encoding encrypted end enum error escape event exact except exclude
    excluding exclusive execute exists explain export export_state extension extensions
    external extract false family fetch filter first float following for force foreign
    forward freeze from full function functions generated generated glob global grant
    granted group grouping grouping_id groups handler having header hold hour hours
    identity if ignore ilike immediate immutable implicit import in include including
    increment index indexes inherit inherits initially inline inner inout input insensitive
    insert install instead int integer intersect interval into invoker is isnull isolation
    join json key label lambda language large last lateral leading leakproof left level
    like limit listen load local location lock locked logged macro map map mapping match
    matched materialized maxvalue merge method microsecond microseconds millennia
    millennium millisecond milliseconds minute minutes minvalue mode month months move name
    names national natural nchar nearest new next no none not nothing notify notnull nowait
    null nullif nulls numeric object of off offset oids old on only operator option options
    or order ordinality others out outer over overlaps overlay overriding owned owner
    parallel parser partial partition partitioned passing password percent persistent pivot
    pivot_longer pivot_wider placing plans policy position positional pragma preceding
    precision prepare prepared preserve primary prior privileges procedural procedure
    program publication qualify quarter quarters quote range read real reassign recheck
    recursive ref references referencing refresh register reindex relative release rename
    repeatable replace replica reset resource resources respect restart restrict returning
    returns revoke right role rollback rollup row rows rule sample savepoint schema schemas
    scope scroll search second seconds secret secure security select semi sequence
    sequences serializable server session set setof sets share show similar similarity
    simple skip smallint snapshot some sorted source sql stable standalone start statement
    statistics stdin stdout storage stored strict strip struct struct subscription
    substring summarize symmetric sysid system table tables tablesample tablespace target
    temp template temporary text then ties time timestamp to trailing transaction transform
    treat trigger trim true truncate trusted try_cast try_cast tuple tuple type types
    unbounded uncommitted unencrypted union unique unknown unlisten unlogged unpack unpivot
    until update use user using vacuum valid validate validator value values varchar
    variable variadic varying verbose version view views virtual volatile week weeks when
    where whitespace window with within without work wrapper write xml xmlattributes
    xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot
    xmlserialize xmltable year years yes zone
    """.split()
)


class _Unnamed(Exception):
    """Raised inside the renderer for a form whose DuckDB name is not known here."""


def duckdb_column_name(projection: exp.Expr) -> str | None:
    """The name DuckDB gives the select-list entry ``projection`` (parsed, not yet qualified),
    or ``None`` when this module does not know the form.

    >>> from engine.sql.dialect import parse_statements
    >>> select = parse_statements("SELECT MIN(n), n + 1, count(*), s AS Total FROM t")[0]
    >>> [duckdb_column_name(p) for p in select.selects]
    ['min(n)', '(n + 1)', 'count_star()', 'Total']
    """
    if isinstance(projection, exp.Alias):
        return projection.alias
    if isinstance(projection, exp.Column):
        return None  # DuckDB uses the bound column's own name, which the binder knows
    try:
        return _render(projection)
    except _Unnamed:
        return None


def mark_result_names(statement: exp.Expr) -> exp.Expr:
    """A copy of ``statement`` whose select-list entries (of every SELECT in it: derived tables
    and CTEs pass their names on through ``*``) carry their DuckDB name in ``meta``; the mark
    survives qualification (``*`` expands to unmarked columns, see marked_result_names).

    >>> from engine.sql.dialect import parse_statements
    >>> marked = mark_result_names(parse_statements("SELECT MAX(x) FROM t")[0])
    >>> marked.selects[0].meta[RESULT_NAME]
    'max(x)'
    """
    if not isinstance(statement, exp.Query):
        return statement
    statement = statement.copy()
    for select in statement.find_all(exp.Select):
        for projection in select.selects:
            name = duckdb_column_name(projection)
            if name is not None:
                projection.meta[RESULT_NAME] = name
    return statement


def marked_result_names(query: exp.Expr) -> tuple[str | None, ...]:
    """The marked name of each outermost select-list entry of the (qualified) ``query``, or
    ``None`` where it has none.

    A column that only passes on an unaliased entry of a derived table or CTE (what ``*``
    expands to) gets that entry's name, as in DuckDB.

    >>> from engine.sql.dialect import parse_statements
    >>> marked_result_names(mark_result_names(parse_statements("SELECT 1 + 2, a FROM t")[0]))
    ('(1 + 2)', None)
    """
    if not isinstance(query, exp.Query):
        return ()
    names: list[str | None] = []
    memo: dict[int, list[str | None]] = {}
    for projection in query.selects:
        name = projection.meta.get(RESULT_NAME)
        if name is None and isinstance(projection, exp.Alias):
            name = projection.this.meta.get(RESULT_NAME)  # qualification added the alias
        if name is None:
            name = _passed_on_name(_leftmost_select(query), projection, memo, 0)
        names.append(name)
    return tuple(names)


# How deep a chain of derived tables is followed for a passed-on name; deeper ones keep theirs.
_MAX_PASS_DEPTH = 16


def _leftmost_select(query: exp.Expr | None) -> exp.Select | None:
    """The SELECT whose select list names ``query``'s columns (a set operation takes its left
    side's names, in DuckDB as in sqlglot)."""
    while isinstance(query, (exp.SetOperation, exp.Subquery)):
        query = query.this
    return query if isinstance(query, exp.Select) else None


def _passed_on_name(
    select: exp.Select | None, projection: exp.Expr, memo: dict[int, list[str | None]], depth: int
) -> str | None:
    """The name DuckDB gives the derived-table or CTE entry that ``projection`` of ``select``
    (qualified) merely passes on, or ``None`` when that entry's name is not marked."""
    column = projection.this if isinstance(projection, exp.Alias) else projection
    if select is None or depth > _MAX_PASS_DEPTH or not isinstance(column, exp.Column):
        return None
    if isinstance(projection, exp.Alias) and projection.alias != column.name:
        return None  # renamed by the user, who would have marked it, or by the qualifier
    inner = _leftmost_select(_source_query(select, column.table))
    if inner is None:
        return None
    matches = [i for i, entry in enumerate(inner.selects) if entry.alias_or_name == column.name]
    if len(matches) != 1:
        return None
    return _derived_names(inner, memo, depth)[matches[0]]


def _derived_names(
    select: exp.Select, memo: dict[int, list[str | None]], depth: int
) -> list[str | None]:
    """The names DuckDB gives the columns of ``select`` used as a derived table or CTE (``None``
    where not marked). Each SELECT is named once per call of marked_result_names."""
    key = id(select)
    if key not in memo:
        memo[key] = [None] * len(select.selects)  # a reference cycle finds no name
        names = [
            _entry_name(select, index, entry, memo, depth)
            for index, entry in enumerate(select.selects)
        ]
        # DuckDB makes a derived table's names unique, case-insensitively and in order, by
        # appending _1, _2, ... to a name already taken: (n + 1), (n + 1)_1.
        taken: set[str] = set()
        unique: list[str | None] = []
        for entry, name in zip(select.selects, names, strict=True):
            base = name if name is not None else entry.alias_or_name
            candidate, suffix = base, 0
            while candidate.casefold() in taken:
                suffix += 1
                candidate = f"{base}_{suffix}"
            taken.add(candidate.casefold())
            unique.append(candidate if name is not None else None)
        memo[key] = unique
    return memo[key]


def _entry_name(
    select: exp.Select,
    index: int,
    entry: exp.Expr,
    memo: dict[int, list[str | None]],
    depth: int,
) -> str | None:
    if not isinstance(entry, exp.Alias):
        return None
    own = entry.meta.get(RESULT_NAME)
    if own is not None:
        # The user's alias; the qualifier may have changed its case, or replaced it with a
        # column alias of the derived table (x(a, b)), whose name then is the one that counts.
        return str(own) if str(own).casefold() == entry.alias.casefold() else None
    marked = entry.this.meta.get(RESULT_NAME)
    if marked is not None:
        # Only under the qualifier's own name for an unaliased entry (sqlglot's output name,
        # else _col_<index>): a column alias list of the derived table renames it, and DuckDB
        # then uses that name.
        own_name = entry.this.output_name or f"_col_{index}"
        return str(marked) if entry.alias == own_name else None
    return _passed_on_name(select, entry, memo, depth + 1)


def _source_query(select: exp.Select, name: str) -> exp.Expr | None:
    """The query behind the FROM or JOIN item of ``select`` called ``name``: a derived table's,
    or a CTE's in scope; ``None`` for a base table or anything else."""
    if not name:
        return None
    items = [select.args.get("from_"), *(select.args.get("joins") or [])]
    for item in items:
        source = item.this if item is not None else None
        if source is None or source.alias_or_name != name:
            continue
        if isinstance(source, exp.Subquery):
            inner = source.this
            return inner if isinstance(inner, exp.Expr) else None
        if isinstance(source, exp.Table) and not source.args.get("db"):
            return _cte_query(select, source.name)
        return None
    return None


def _cte_query(node: exp.Expr, name: str) -> exp.Expr | None:
    """The nearest CTE called ``name`` visible from ``node`` (a WITH on it or an ancestor)."""
    scope: exp.Expr | None = node
    while scope is not None:
        with_ = scope.args.get("with_")
        if isinstance(with_, exp.With):
            for cte in with_.expressions:
                if cte.alias == name and isinstance(cte.this, exp.Expr):
                    return cte.this
        scope = scope.parent
    return None


def name_result_columns(
    columns: Sequence[ResultColumn], names: Sequence[str | None]
) -> tuple[ResultColumn, ...]:
    """``columns`` renamed where ``names`` has a name; unchanged when the counts differ.

    >>> name_result_columns([ResultColumn("_col_0", "INT", None)], ["min(n)"])[0].name
    'min(n)'
    """
    if len(columns) != len(names):
        return tuple(columns)
    return tuple(
        column if name is None else replace(column, name=name)
        for column, name in zip(columns, names, strict=True)
    )


def _identifier(identifier: exp.Expr) -> str:
    name = identifier.name
    if _PLAIN_NAME.fullmatch(name) and name.lower() not in DUCKDB_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _render(node: exp.Expr) -> str:  # noqa: PLR0911, PLR0912 - one branch per form
    if isinstance(node, exp.Paren):
        return _render(node.this)  # DuckDB keeps no parentheses; its operators add their own
    if isinstance(node, exp.Column):
        if isinstance(node.this, exp.Star):
            raise _Unnamed
        return ".".join(_identifier(part) for part in node.parts)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "'" + str(node.this).replace("'", "''") + "'"
        return str(node.this)
    if isinstance(node, exp.HexString):
        return f"X'{node.this}'"
    if isinstance(node, exp.Null):
        return "NULL"
    if isinstance(node, exp.Boolean):
        return "true" if node.this else "false"
    if isinstance(node, exp.Neg):
        if isinstance(node.this, exp.Literal) and node.this.is_number:
            return f"-{node.this.this}"  # DuckDB folds a negative number into the constant
        return f"(-({_render(node.this)}))"
    if isinstance(node, exp.Not):
        # sqlglot reads "x IS NOT NULL" and "NOT x IS NULL" alike; the first is far more common.
        # With parentheses, NOT (x IS NULL) stays a NOT, as DuckDB prints it.
        inner = node.this
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            return f"({_render(inner.this)} IS NOT NULL)"
        return f"(NOT {_render(inner)})"
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return f"({_render(node.this)} IS NULL)"
    if isinstance(node, (exp.And, exp.Or)):
        word = " AND " if isinstance(node, exp.And) else " OR "
        return "(" + word.join(_render(part) for part in _conjuncts(node, type(node))) + ")"
    if type(node) in _BINARY:
        operator = _BINARY[type(node)]
        if node.args.get("negate"):
            operator = _NEGATED_BINARY.get(type(node)) or _fail()
        if node.args.get("escape") is not None:
            raise _Unnamed
        return f"({_render(node.this)} {operator} {_render(node.expression)})"
    if isinstance(node, exp.Between):
        low, high = node.args["low"], node.args["high"]
        return f"({_render(node.this)} BETWEEN {_render(low)} AND {_render(high)})"
    if isinstance(node, exp.In):
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise _Unnamed
        items = ", ".join(_render(item) for item in node.expressions)
        return f"({_render(node.this)} IN ({items}))"
    if isinstance(node, (exp.Cast, exp.TryCast)):
        word = "TRY_CAST" if isinstance(node, exp.TryCast) else "CAST"
        return f"{word}({_render(node.this)} AS {_type_name(node.to)})"
    if isinstance(node, exp.Coalesce):
        arguments = [node.this, *node.expressions]
        return "COALESCE(" + ", ".join(_render(a) for a in arguments) + ")"
    if isinstance(node, exp.Case):
        return _case(node)
    if isinstance(node, exp.Filter) and isinstance(node.expression, exp.Where):
        return f"{_render(node.this)} FILTER (WHERE {_render(node.expression.this)})"
    if isinstance(node, exp.Count):
        return _count(node)
    if isinstance(node, _SAME_NAME_FUNCTIONS):
        arguments = [a for a in node.args.values() if isinstance(a, exp.Expr)]
        if any(isinstance(a, exp.Distinct) for a in arguments):
            raise _Unnamed
        # sqlglot keeps the arguments in declaration order, which is DuckDB's order.
        return f"{node.sql_name().lower()}(" + ", ".join(_render(a) for a in arguments) + ")"
    if isinstance(node, exp.Anonymous):
        name = str(node.this)
        if not _PLAIN_NAME.fullmatch(name):
            raise _Unnamed
        return f"{name.lower()}(" + ", ".join(_render(a) for a in node.expressions) + ")"
    raise _Unnamed


def _fail() -> str:
    raise _Unnamed


def _conjuncts(node: exp.Expr, kind: type[exp.Expr]) -> list[exp.Expr]:
    """The operands of a chain of AND (or OR), through parentheses: DuckDB's parser folds
    ``a AND (b AND c)`` into one conjunction of three."""
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, kind):
        return [node]
    return [*_conjuncts(node.this, kind), *_conjuncts(node.expression, kind)]


def _count(node: exp.Count) -> str:
    argument = node.this
    if argument is None or isinstance(argument, exp.Star):
        return "count_star()"
    if isinstance(argument, exp.Distinct):
        if len(argument.expressions) != 1:
            raise _Unnamed
        return f"count(DISTINCT {_render(argument.expressions[0])})"
    return f"count({_render(argument)})"


def _case(node: exp.Case) -> str:
    # DuckDB prints a simple CASE as the searched form, with two spaces after CASE and each
    # WHEN and THEN in parentheses: CASE  WHEN ((n = 1)) THEN (2) ELSE NULL END.
    operand = node.this
    text = "CASE "
    for branch in node.args.get("ifs") or []:
        condition = branch.this
        if operand is not None:
            condition = exp.EQ(this=operand, expression=condition)
        text += f" WHEN ({_render(condition)}) THEN ({_render(branch.args['true'])})"
    default = node.args.get("default")
    return f"{text} ELSE {_render(default) if default is not None else 'NULL'} END"


def _type_name(dtype: exp.DataType) -> str:
    written = str(dtype.meta.get("declared_type") or "")
    base, parenthesis, rest = written.partition("(")
    name = _TYPE_NAMES.get(base)
    if name is None:
        raise _Unnamed
    return name + parenthesis + rest

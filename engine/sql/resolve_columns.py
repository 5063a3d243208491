"""Rewrite rule (annotation only): bind every column reference to the column it comes from.

Each ``exp.Column`` gets ``meta["ae_target"]`` (an EncryptionTarget, or None for plaintext)
and ``meta["ae_declared_type"]``; a column of a CTE or subquery keeps the target of the base
column it passes through. It must run after qualify_columns and must not refuse operations.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from engine.errors import ProgrammingError
from engine.sql._outermost import outermost_queries
from engine.sql.catalog import CatalogSnapshot
from engine.sql.plan import EncryptionTarget

__all__ = ["base_origin", "dml_sources", "origin", "resolve_columns"]

Origin = tuple[EncryptionTarget | None, str | None]
Fallback = Callable[[exp.Column], Origin | None]

TARGET = "ae_target"
DECLARED = "ae_declared_type"


def base_origin(catalog: CatalogSnapshot, table: str, column: str) -> Origin:
    if not catalog.has_table(table):
        return None, None  # a table function or a table the snapshot does not know
    info = catalog.table(table)
    col = info.column(column)
    if col.encryption is None:
        return None, col.declared_type
    target = EncryptionTarget(
        table=info.name,
        column=col.name,
        cek_name=col.encryption.cek_name,
        encryption_type=col.encryption.encryption_type,
        declared_type=col.declared_type,
    )
    return target, col.declared_type


def _projection(query: exp.Expr, name: str) -> exp.Expr | None:
    if not isinstance(query, exp.Query):
        return None
    for projection in query.selects:
        if projection.alias_or_name.casefold() == name.casefold():
            return projection
    return None


def origin(node: exp.Expr | None) -> Origin:
    """Where a value expression's data comes from, after resolve_columns ran.

    Bare columns, parentheses, aliases and scalar subqueries carry their column's target;
    any other expression yields plaintext (the classifier refuses those over ciphertext).
    """
    while isinstance(node, (exp.Paren, exp.Alias)):
        node = node.this
    if isinstance(node, exp.Column):
        return node.meta.get(TARGET), node.meta.get(DECLARED)
    if isinstance(node, exp.AnyValue):
        # Only rewrites write ANY_VALUE over ciphertext (a group's key cells, passed through);
        # the classifier refuses the user's own before anything asks for its origin.
        return origin(node.this)
    if isinstance(node, exp.Subquery):
        return origin(node.this)
    if isinstance(node, exp.Query) and len(node.selects) == 1:
        return origin(node.selects[0])
    return None, None


class _Binder:
    def __init__(self, catalog: CatalogSnapshot, fallback: Fallback | None) -> None:
        self.catalog = catalog
        self.fallback = fallback
        self.scopes: dict[int, Scope] = {}

    def bind_query(self, query: exp.Expr) -> None:
        for scope in traverse_scope(query):
            self.scopes[id(scope.expression)] = scope
            for column in scope.columns:
                self._annotate(column, self.resolve(scope, column))

    def bind_leftover(self, column: exp.Column) -> None:
        """Bind a column no scope listed, such as ORDER BY naming a projection alias."""
        node = column.parent
        while node is not None:
            scope = self.scopes.get(id(node))
            if scope is not None:
                self._annotate(column, self.resolve(scope, column))
                return
            node = node.parent
        self._annotate(column, self.fallback(column) if self.fallback else None)

    def _annotate(self, column: exp.Column, found: Origin | None) -> None:
        if found is None:
            raise ProgrammingError(f"cannot resolve column {column.sql('duckdb')}")
        column.meta[TARGET], column.meta[DECLARED] = found

    def resolve(self, scope: Scope | None, column: exp.Column) -> Origin | None:
        name, table = column.name, column.table
        current = scope
        while current is not None:
            if table:
                source = current.sources.get(table)
                if source is not None:
                    return self._from_source(source, name)
            else:
                # ORDER BY / GROUP BY may name a projection alias; a set operation's
                # projections are those of its leftmost branch.
                named = _leftmost(current)
                projection = _projection(named.expression, name)
                if projection is not None and projection.unalias() is not column:
                    return self._from_projection(named, projection)
            current = current.parent
        return self.fallback(column) if self.fallback else None

    def _from_source(self, source: exp.Expr | Scope, name: str) -> Origin | None:
        if isinstance(source, exp.Table):
            return base_origin(self.catalog, source.name, name)
        if isinstance(source, Scope):
            # A set operation's columns are named by its leftmost branch; classify checks
            # that every branch agrees on the key.
            source = _leftmost(source)
            projection = _projection(source.expression, name)
            if projection is None:
                return None
            return self._from_projection(source, projection)
        return None, None

    def _from_projection(self, scope: Scope, projection: exp.Expr) -> Origin | None:
        node = projection.unalias()
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Column):
            return self.resolve(scope, node)
        return None, None


def _leftmost(scope: Scope) -> Scope:
    while isinstance(scope.expression, exp.SetOperation) and scope.set_operation_scopes:
        scope = scope.set_operation_scopes[0]
    return scope


def dml_sources(expression: exp.Expr) -> dict[str, str]:
    """Alias to table name for the tables an UPDATE or DELETE reads and writes."""
    tables: list[exp.Table] = []
    this = expression.this
    if isinstance(this, exp.Table):
        tables.append(this)
    for key in ("from_", "using"):
        value = expression.args.get(key)
        for node in value if isinstance(value, list) else [value]:
            if isinstance(node, exp.From) and isinstance(node.this, exp.Table):
                tables.append(node.this)
            elif isinstance(node, exp.Table):
                tables.append(node)
    for join in expression.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            tables.append(join.this)
    return {table.alias_or_name.casefold(): table.name for table in tables}


def _set_target_table(statement: exp.Expr, column: exp.Column) -> str | None:
    """The updated table's name when ``column`` is the left side of an UPDATE's SET item."""
    item = column.parent
    if (
        isinstance(statement, exp.Update)
        and isinstance(item, exp.EQ)
        and item.this is column
        and item.parent is statement
        and item.arg_key == "expressions"
        and isinstance(statement.this, exp.Table)
    ):
        return str(statement.this.name)
    return None


def resolve_columns(expression: exp.Expr, catalog: CatalogSnapshot) -> exp.Expr:
    """Annotate each column of ``expression`` (a new tree) with its origin.

    >>> from sqlglot import parse_one
    >>> from engine.sql.catalog import ColumnInfo, Encryption, TableInfo
    >>> enc = Encryption("cek1", "DETERMINISTIC")
    >>> t = TableInfo("t", (ColumnInfo("a", "INT"), ColumnInfo("b", "CHAR(3)", enc)))
    >>> snap = CatalogSnapshot(1, tables=(t,))
    >>> sql = "SELECT q.b FROM (SELECT t.b AS b FROM t AS t) AS q"
    >>> tree = resolve_columns(parse_one(sql), snap)
    >>> tree.selects[0].meta["ae_target"].label
    't.b'
    """
    expression = expression.copy()
    if isinstance(expression, (exp.Update, exp.Delete)):
        sources = dml_sources(expression)

        def fallback(column: exp.Column) -> Origin | None:
            if column.table:
                table = sources.get(column.table.casefold())
                return None if table is None else base_origin(catalog, table, column.name)
            target = _set_target_table(expression, column)
            if target is not None:
                # SET's left side names a column of the updated table, whatever FROM adds.
                return base_origin(catalog, target, column.name)
            found = [
                t
                for t in sources.values()
                if catalog.has_table(t)
                and any(
                    c.name.casefold() == column.name.casefold() for c in catalog.table(t).columns
                )
            ]
            if len(found) > 1:
                raise ProgrammingError(
                    f"column {column.name} is ambiguous; qualify it with its table name"
                )
            if not found:
                return None if any(catalog.has_table(t) for t in sources.values()) else (None, None)
            return base_origin(catalog, found[0], column.name)

        binder = _Binder(catalog, fallback)
        for query in outermost_queries(expression):
            binder.bind_query(query)
        for column in expression.find_all(exp.Column):
            if TARGET not in column.meta:
                binder.bind_leftover(column)
        return expression
    binder = _Binder(catalog, None)
    binder.bind_query(expression)
    for column in expression.find_all(exp.Column):
        if TARGET not in column.meta:
            binder.bind_leftover(column)
    return expression

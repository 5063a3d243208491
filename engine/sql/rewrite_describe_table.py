"""rewrite_describe_table: `DESCRIBE t` on a table with encrypted columns shows declared types.

DuckDB stores an encrypted column as BLOB and the catalog keeps its declared type, so the rule
turns `DESCRIBE t` into a query over DuckDB's own DESCRIBE that swaps the declared types in. It is
a pure function of the statement and the catalog snapshot and returns any other statement as it
is. It reveals only metadata the catalog tables already show.
"""

from __future__ import annotations

from sqlglot import exp

from engine.sql.catalog import CatalogSnapshot
from engine.sql.dialect import parse_statements, to_sql

__all__ = ["rewrite_describe_table"]


def rewrite_describe_table(expression: exp.Expr, catalog: CatalogSnapshot) -> exp.Expr:
    """The DESCRIBE of a table with encrypted columns as a query with their declared types.

    >>> from engine.sql.catalog import ColumnInfo, Encryption, TableInfo
    >>> table = TableInfo("t", (ColumnInfo("a", "INTEGER"),
    ...                         ColumnInfo("b", "DATE", Encryption("k", "RANDOMIZED"))))
    >>> catalog = CatalogSnapshot(1, tables=(table,))
    >>> print(to_sql(rewrite_describe_table(parse_statements("DESCRIBE t")[0], catalog)))
    ... # doctest: +NORMALIZE_WHITESPACE
    SELECT column_name, COALESCE(CASE LOWER(column_name) WHEN 'b' THEN 'DATE' END, column_type)
    AS column_type, "null", "key", "default", extra FROM (DESCRIBE t)
    >>> rewrite_describe_table(parse_statements("DESCRIBE SELECT 1")[0], catalog).key
    'describe'
    """
    target = expression.this if isinstance(expression, exp.Describe) else None
    if not isinstance(target, exp.Table) or target.db.casefold() == "sys":
        return expression
    if not catalog.has_table(target.name) or not catalog.table(target.name).encrypted:
        return expression
    declared = [
        (exp.Literal.string(column.name.casefold()), exp.Literal.string(column.declared_type))
        for column in catalog.table(target.name).columns
        if column.encryption is not None
    ]
    whens = " ".join(f"WHEN {name.sql()} THEN {type_.sql()}" for name, type_ in declared)
    # The hidden tag columns (engine.sql.tag_columns) are left out, as from SELECT *.
    tags = [
        exp.Literal.string(column.tag_column.casefold()).sql()
        for column in catalog.table(target.name).columns
        if column.tag_column is not None
    ]
    hidden = f" WHERE lower(column_name) NOT IN ({', '.join(tags)})" if tags else ""
    query = (
        f"SELECT column_name, COALESCE(CASE lower(column_name) {whens} END, column_type) "
        f'AS column_type, "null", "key", "default", extra FROM ({to_sql(expression)}){hidden}'
    )
    return parse_statements(query)[0]

"""Rewrite rule: every INSERT and UPDATE that writes a tagged DETERMINISTIC column also writes
its tag, so the tag always agrees with the stored cell: a ``?`` gets a tag ``?`` (the client
computes it from the same cell), any other value the tag DuckDB computes from the cell itself.
A write it cannot extend is refused, never passed through; DuckDB's NOT NULL on the tag column
catches an INSERT that forgets it.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.catalog import CatalogSnapshot, TableInfo
from engine.sql.parameterize_literals import TAG
from engine.sql.tag_columns import tag_expression

__all__ = ["rewrite_tag_writes"]

_SOURCE = "__ae_source"


def _tag_value(value: exp.Expr) -> exp.Expr:
    """The tag of the cell ``value`` writes: a tag ``?`` for a ``?``, else DuckDB's."""
    if isinstance(value, exp.Placeholder):
        copied = exp.Placeholder()
        copied.meta.update(value.meta)
        copied.meta[TAG] = True
        return copied
    return tag_expression(value.copy())


def _tagged_table(table: exp.Expr | None, catalog: CatalogSnapshot) -> TableInfo | None:
    if not isinstance(table, exp.Table) or table.args.get("db") is not None:
        return None
    if not catalog.has_table(table.name):
        return None
    info = catalog.table(table.name)
    return info if any(c.tag_column for c in info.columns) else None


def _refuse(table: str, what: str) -> NotSupportedError:
    return NotSupportedError(
        f"{what} is not supported on table {table}, whose deterministic columns keep a hidden "
        "tag column; list the columns and use INSERT … VALUES, INSERT … SELECT or UPDATE"
    )


def _insert(insert: exp.Insert, catalog: CatalogSnapshot) -> exp.Expr:
    schema = insert.this
    table = schema.this if isinstance(schema, exp.Schema) else schema
    info = _tagged_table(table, catalog)
    if info is None:
        return insert
    if insert.args.get("by_name"):
        raise _refuse(info.name, "INSERT … BY NAME")
    conflict = insert.args.get("conflict")
    if conflict is not None and conflict.args.get("action") is not None:
        action = conflict.args["action"]
        if "NOTHING" not in str(action.sql() if isinstance(action, exp.Expr) else action).upper():
            raise _refuse(info.name, "INSERT … ON CONFLICT DO UPDATE")
    if insert.args.get("replace") or insert.args.get("alternative"):
        raise _refuse(info.name, "INSERT OR REPLACE")
    listed = (
        [c.name for c in schema.expressions]
        if isinstance(schema, exp.Schema) and schema.expressions
        else [c.name for c in info.columns]
    )
    positions = {name.casefold(): index for index, name in enumerate(listed)}
    tags = [(c.tag_column, positions.get(c.name.casefold())) for c in info.columns if c.tag_column]
    source = insert.expression
    result = insert.copy()
    if isinstance(source, exp.Values):
        rows = []
        for row in result.expression.expressions:
            if not isinstance(row, exp.Tuple) or len(row.expressions) != len(listed):
                return insert  # DuckDB reports the mismatch itself
            extra = [
                _tag_value(row.expressions[p]) if p is not None else exp.Literal.number(0)
                for _, p in tags
            ]
            rows.append(exp.Tuple(expressions=[*row.expressions, *extra]))
        result.expression.set("expressions", rows)
    elif isinstance(source, exp.Query):
        selects = source.selects if not isinstance(source, exp.SetOperation) else None
        if isinstance(source, exp.SetOperation):
            left: exp.Expr = source
            while isinstance(left, exp.SetOperation):
                left = left.this
            selects = left.selects if isinstance(left, exp.Query) else []
        if not selects or any(isinstance(s, exp.Star) or s.find(exp.Star) for s in selects):
            raise _refuse(info.name, "INSERT … SELECT * from a table without encrypted columns")
        if len(selects) != len(listed):
            return insert  # DuckDB reports the mismatch itself
        names = [f"c{index}" for index in range(len(listed))]
        alias = exp.TableAlias(
            this=exp.to_identifier(_SOURCE),
            columns=[exp.to_identifier(n) for n in names],
        )
        wrapped = exp.select(
            *[exp.column(n, table=_SOURCE) for n in names],
            *[
                tag_expression(exp.column(names[p], table=_SOURCE))
                if p is not None
                else exp.Literal.number(0)
                for _, p in tags
            ],
        ).from_(exp.Subquery(this=result.expression, alias=alias))
        result.set("expression", wrapped)
    else:
        raise _refuse(info.name, "this form of INSERT")
    target = table.copy()
    columns = [exp.to_identifier(n, quoted=True) for n in listed]
    columns += [exp.to_identifier(tag, quoted=True) for tag, _ in tags]
    result.set("this", exp.Schema(this=target, expressions=columns))
    returning = result.args.get("returning")
    if returning is not None and returning.find(exp.Star):
        raise _refuse(info.name, "RETURNING *")
    return result


def _update(update: exp.Update, catalog: CatalogSnapshot) -> exp.Expr:
    info = _tagged_table(update.this, catalog)
    if info is None:
        return update
    tags = {c.name.casefold(): c.tag_column for c in info.columns if c.tag_column}
    result = update.copy()
    extra = []
    for assignment in result.expressions:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            continue
        tag = tags.get(assignment.this.name.casefold())
        if tag is not None:
            extra.append(
                exp.EQ(
                    this=exp.column(exp.to_identifier(tag, quoted=True)),
                    expression=_tag_value(assignment.expression),
                )
            )
    if not extra:
        return update
    result.set("expressions", [*result.expressions, *extra])
    returning = result.args.get("returning")
    if returning is not None and returning.find(exp.Star):
        raise _refuse(info.name, "RETURNING *")
    return result


def rewrite_tag_writes(expression: exp.Expr, catalog: CatalogSnapshot) -> exp.Expr:
    """INSERT and UPDATE with the tag columns of the written DETERMINISTIC columns added (a new
    tree; ``expression`` itself when nothing applies). Runs on a bound, parameterized tree.

    >>> from engine.sql.catalog import ColumnInfo, Encryption
    >>> from engine.sql.dialect import parse_statements
    >>> ssn = ColumnInfo("ssn", "INT", Encryption("cek1", "DETERMINISTIC"), "__ae_tag_ssn")
    >>> snap = CatalogSnapshot(1, tables=(TableInfo("p", (ColumnInfo("id", "INT"), ssn)),))
    >>> print(rewrite_tag_writes(parse_statements("INSERT INTO p VALUES (1, ?)")[0], snap).sql())
    INSERT INTO p ("id", "ssn", "__ae_tag_ssn") VALUES (1, ?, ?)
    >>> print(rewrite_tag_writes(parse_statements("INSERT INTO p VALUES (1, NULL)")[0], snap).sql())
    ... # doctest: +NORMALIZE_WHITESPACE
    INSERT INTO p ("id", "ssn", "__ae_tag_ssn")
    VALUES (1, NULL, COALESCE(TRY_CAST('0x' || SUBSTRING(HEX(NULL), 3, 15) AS BIGINT), 0))
    >>> rewrite_tag_writes(parse_statements("UPDATE p SET id = 2")[0], snap).sql()
    'UPDATE p SET id = 2'
    """
    if isinstance(expression, exp.Insert):
        return _insert(expression, catalog)
    if isinstance(expression, exp.Update):
        return _update(expression, catalog)
    return expression

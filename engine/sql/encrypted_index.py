"""CREATE INDEX on a table with encrypted columns: allowed over plaintext and deterministic
columns, refused over randomized ones.

An ART index over deterministic ciphertext orders equal cells together and so reveals which
rows are equal, which deterministic encryption already reveals; it speeds up point lookups.
Over randomized ciphertext it would be useless (equal values differ) and it is refused, as is
any index over an expression of an encrypted column. It must not touch other statements.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.catalog import CatalogSnapshot
from engine.sql.dialect import SOURCE_SQL, to_sql
from engine.sql.plan import Plan

__all__ = ["describe_create_index"]


def describe_create_index(statement: exp.Expr, catalog: CatalogSnapshot) -> Plan | None:
    """The Plan of ``CREATE [UNIQUE] INDEX`` on a table with encrypted columns, or None when
    the statement is something else.

    >>> from engine.sql.catalog import ColumnInfo, Encryption, TableInfo
    >>> from engine.sql.dialect import parse_statements
    >>> ssn = ColumnInfo("ssn", "CHAR(11)", Encryption("cek1", "DETERMINISTIC"))
    >>> pay = ColumnInfo("pay", "INT", Encryption("cek1", "RANDOMIZED"))
    >>> snap = CatalogSnapshot(1, (), (), (TableInfo("p", (ColumnInfo("id", "INT"), ssn, pay)),))
    >>> describe_create_index(parse_statements("CREATE INDEX i ON p (ssn)")[0], snap).kind
    'ddl'
    >>> describe_create_index(parse_statements("CREATE INDEX i ON p (pay)")[0], snap)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.NotSupportedError: an index on the randomized column p.pay ...
    """
    if not (
        isinstance(statement, exp.Create)
        and str(statement.args.get("kind") or "").upper() == "INDEX"
        and isinstance(statement.this, exp.Index)
    ):
        return None
    index = statement.this
    table = index.args.get("table")
    if not isinstance(table, exp.Table) or not catalog.has_table(table.name):
        return None
    info = catalog.table(table.name)
    if not info.encrypted:
        return None
    params = index.args.get("params")
    keys = list(params.args.get("columns") or ()) if params is not None else []
    for key in keys:
        expression = key.this if isinstance(key, exp.Ordered) else key
        for column in expression.find_all(exp.Column):
            encryption = info.column(column.name).encryption
            if encryption is None:
                continue
            label = f"{info.name}.{info.column(column.name).name}"
            if not isinstance(expression, exp.Column):
                raise NotSupportedError(
                    f"an index on an expression of the encrypted column {label} is not "
                    "supported (the host sees only ciphertext); index the column itself if it "
                    "is deterministic"
                )
            if encryption.encryption_type != "DETERMINISTIC":
                raise NotSupportedError(
                    f"an index on the randomized column {label} is not supported: equal "
                    "values have different ciphertexts, so it could not find anything; use "
                    "DETERMINISTIC encryption for columns you look up by value"
                )
    return Plan(
        kind="ddl",
        sql=str(statement.meta.get(SOURCE_SQL) or to_sql(statement)),
        catalog_version=catalog.version,
    )

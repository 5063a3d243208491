"""Rewrite rule: table DDL with encrypted columns becomes DuckDB DDL over BLOB columns.

``rewrite_encrypted_ddl`` turns ENCRYPTED WITH columns into BLOB ones; ``encrypted_ddl_changes``
lists the catalog records the host must write. Neither may touch keys or run the DDL, and a
constraint that would compare plaintext (DEFAULT, CHECK) is refused, never silently dropped.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.ae_nodes import AlterColumnEncryption, EncryptedWithColumnConstraint
from engine.sql.catalog import CatalogSnapshot
from engine.sql.declared_types import encryptable_type
from engine.sql.plan import CatalogChange, DropEncryptedColumns, RegisterEncryptedColumn
from engine.sql.tag_columns import tag_column_name

__all__ = ["encrypted_ddl_changes", "rewrite_encrypted_ddl"]


def _constraint_kind(constraint: exp.Expr) -> exp.Expr:
    """What a column constraint says. sqlglot wraps most kinds in a ColumnConstraint, but some
    (IN/OUT, for one) stand in the constraint list bare."""
    return constraint.args["kind"] if isinstance(constraint, exp.ColumnConstraint) else constraint


def _encryption_of(column: exp.ColumnDef) -> EncryptedWithColumnConstraint | None:
    for constraint in column.constraints:
        kind = _constraint_kind(constraint)
        if isinstance(kind, EncryptedWithColumnConstraint):
            return kind
    return None


def _declared_type(column: exp.ColumnDef) -> str:
    kind = column.args.get("kind")
    if kind is None:
        raise ProgrammingError(f"encrypted column {column.name} needs a declared type")
    return str(kind.meta.get("declared_type") or kind.sql("duckdb"))


def _check_column(table: str, column: exp.ColumnDef, catalog: CatalogSnapshot) -> str:
    """Validate one encrypted column definition; returns its canonical declared type."""
    encryption = _encryption_of(column)
    assert encryption is not None
    label = f"{table}.{column.name}"
    catalog.cek(encryption.name)  # raises ProgrammingError naming the unknown key
    declared = encryptable_type(label, _declared_type(column))
    randomized = encryption.args["encryption_type"].name == "RANDOMIZED"
    for constraint in column.constraints:
        kind = _constraint_kind(constraint)
        if isinstance(kind, (EncryptedWithColumnConstraint, exp.NotNullColumnConstraint)):
            continue
        if isinstance(kind, (exp.PrimaryKeyColumnConstraint, exp.UniqueColumnConstraint)):
            if randomized:
                raise ProgrammingError(
                    f"{label} is RANDOMIZED, so PRIMARY KEY or UNIQUE cannot be enforced on its "
                    "ciphertext; declare it ENCRYPTION_TYPE = DETERMINISTIC"
                )
            continue
        raise NotSupportedError(
            f"{label} is encrypted; the column constraint "
            f"{type(kind).__name__.replace('ColumnConstraint', '').upper()} would need its "
            "plaintext and cannot be declared on an encrypted column"
        )
    return declared


def _encrypted_names(schema: exp.Schema) -> dict[str, bool]:
    """Encrypted column name (case-folded) to whether it is randomized."""
    return {
        c.name.casefold(): enc.args["encryption_type"].name == "RANDOMIZED"
        for c in schema.expressions
        if isinstance(c, exp.ColumnDef) and (enc := _encryption_of(c)) is not None
    }


def _check_table_constraints(table: str, schema: exp.Schema) -> None:
    encrypted = _encrypted_names(schema)
    for constraint in schema.expressions:
        if isinstance(constraint, exp.ColumnDef):
            continue
        names = {i.name.casefold() for i in constraint.find_all(exp.Identifier)}
        touched = sorted(names & encrypted.keys())
        if not touched:
            continue
        label = f"{table}.{touched[0]}"
        inner = constraint
        if isinstance(constraint, exp.Constraint) and constraint.expressions:
            inner = constraint.expressions[0]  # CONSTRAINT name PRIMARY KEY (...)
        if isinstance(inner, (exp.PrimaryKey, exp.UniqueColumnConstraint)):
            if any(encrypted[n] for n in touched):
                raise ProgrammingError(
                    f"{label} is RANDOMIZED, so PRIMARY KEY or UNIQUE cannot be enforced on its "
                    "ciphertext; declare it ENCRYPTION_TYPE = DETERMINISTIC"
                )
            continue
        raise NotSupportedError(
            f"{label} is encrypted; this table constraint would need its plaintext"
        )


def _to_blob(column: exp.ColumnDef) -> None:
    column.set("kind", exp.DataType.build("BLOB"))
    column.set(
        "constraints",
        [
            c
            for c in column.constraints
            if not isinstance(_constraint_kind(c), EncryptedWithColumnConstraint)
        ],
    )


def _table_name(expression: exp.Expr) -> str:
    this = expression.this
    table = this.this if isinstance(this, exp.Schema) else this
    return table.name if isinstance(table, exp.Table) else ""


def rewrite_encrypted_ddl(expression: exp.Expr, catalog: CatalogSnapshot) -> exp.Expr:
    """CREATE TABLE / ALTER TABLE ADD with ENCRYPTED WITH columns, as DuckDB DDL (a new tree).

    >>> from engine.sql.catalog import (
    ...     ColumnEncryptionKey, ColumnEncryptionKeyValue, ColumnMasterKey)
    >>> from engine.sql.dialect import parse_statements
    >>> cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),))
    >>> snap = CatalogSnapshot(1, (ColumnMasterKey("cmk1", "PEM_FILE", "/k"),), (cek,))
    >>> ddl = parse_statements(
    ...     "CREATE TABLE p (id INT, ssn CHAR(11) NOT NULL ENCRYPTED WITH ("
    ...     "COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = DETERMINISTIC, "
    ...     "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))")[0]
    >>> rewrite_encrypted_ddl(ddl, snap).sql("duckdb")
    'CREATE TABLE p (id INT, ssn BLOB NOT NULL, "__ae_tag_ssn" BIGINT NOT NULL)'
    """
    if not isinstance(expression, (exp.Create, exp.Alter)) or not expression.find(
        EncryptedWithColumnConstraint
    ):
        return expression
    expression = expression.copy()
    table = _table_name(expression)
    if isinstance(expression, exp.Create):
        if isinstance(expression.this, exp.Schema):
            _check_table_constraints(table, expression.this)
        columns = list(expression.this.expressions) if expression.this else []
    else:
        if expression.find(AlterColumnEncryption):
            raise NotSupportedError(
                f"ALTER TABLE {table} ALTER COLUMN ... ENCRYPTED WITH (in-place encryption) "
                "is not available yet; create a new encrypted table and copy the values "
                "through the client"
            )
        columns = list(expression.args.get("actions") or [])
    tags: list[exp.ColumnDef] = []
    for column in columns:
        if isinstance(column, exp.ColumnDef) and (encryption := _encryption_of(column)):
            _check_column(table, column, catalog)
            if isinstance(expression, exp.Create) and _deterministic(encryption):
                tags.append(_tag_definition(column.name))
            _to_blob(column)
    if tags:
        # After the last column, before any table constraint.
        schema = expression.this
        last = max(i for i, c in enumerate(schema.expressions) if isinstance(c, exp.ColumnDef))
        schema.set(
            "expressions",
            [*schema.expressions[: last + 1], *tags, *schema.expressions[last + 1 :]],
        )
    return expression


def _deterministic(encryption: EncryptedWithColumnConstraint) -> bool:
    return bool(encryption.args["encryption_type"].name == "DETERMINISTIC")


def _tag_definition(column: str) -> exp.ColumnDef:
    """The hidden tag column of ``column``. NOT NULL (a NULL cell's tag is 0), so a write
    that forgets the tag fails in DuckDB instead of leaving a row that lookups miss."""
    return exp.ColumnDef(
        this=exp.to_identifier(tag_column_name(column), quoted=True),
        kind=exp.DataType.build("BIGINT"),
        constraints=[exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())],
    )


def encrypted_ddl_changes(
    expression: exp.Expr, catalog: CatalogSnapshot
) -> tuple[CatalogChange, ...]:
    """The catalog records a table DDL statement implies (run on the original statement).

    >>> from engine.sql.dialect import parse_statements
    >>> from engine.sql.catalog import ColumnInfo, Encryption, TableInfo
    >>> enc = Encryption("cek1", "RANDOMIZED")
    >>> snap = CatalogSnapshot(1, tables=(TableInfo("p", (ColumnInfo("s", "INT", enc),)),))
    >>> encrypted_ddl_changes(parse_statements("DROP TABLE p")[0], snap)
    (DropEncryptedColumns(table='p', columns=()),)
    """
    if isinstance(expression, exp.Drop):
        if str(expression.args.get("kind") or "").upper() != "TABLE":
            return ()
        tables = expression.args.get("tables") or [expression.this]
        return tuple(
            DropEncryptedColumns(catalog.table(t.name).name)
            for t in tables
            if isinstance(t, exp.Table)
            and catalog.has_table(t.name)
            and catalog.table(t.name).encrypted
        )
    table = _table_name(expression)
    changes: list[CatalogChange] = []
    if isinstance(expression, exp.Create):
        if expression.args.get("exists") and catalog.has_table(table):
            return ()  # IF NOT EXISTS on an existing table changes nothing
        if expression.args.get("replace") and catalog.has_table(table):
            # CREATE OR REPLACE drops the old table, and with it the old registrations.
            if catalog.table(table).encrypted:
                changes.append(DropEncryptedColumns(catalog.table(table).name))
        schema = expression.this
        columns = list(schema.expressions) if isinstance(schema, exp.Schema) else []
    elif isinstance(expression, exp.Alter):
        columns = list(expression.args.get("actions") or [])
    else:
        return ()
    for column in columns:
        if isinstance(column, exp.ColumnDef) and (enc := _encryption_of(column)) is not None:
            declared = _check_column(table, column, catalog)
            changes.append(
                RegisterEncryptedColumn(
                    table=table,
                    column=column.name,
                    declared_type=declared,
                    cek_name=catalog.cek(enc.name).name,
                    encryption_type=enc.args["encryption_type"].name,
                    algorithm=enc.args["algorithm"].name,
                    tag_column=(
                        tag_column_name(column.name)
                        if isinstance(expression, exp.Create) and _deterministic(enc)
                        else None
                    ),
                )
            )
        if (
            isinstance(expression, exp.Alter)
            and isinstance(column, exp.Drop)
            and catalog.has_table(table)
        ):
            info = catalog.table(table)
            for dropped in column.args.get("tables") or [column.this]:
                name = dropped.name if dropped is not None else ""
                if any(c.name.casefold() == name.casefold() and c.encryption for c in info.columns):
                    changes.append(DropEncryptedColumns(info.name, (info.column(name).name,)))
    return tuple(changes)

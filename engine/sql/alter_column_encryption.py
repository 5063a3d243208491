"""describe_alter_column_encryption(): ``ALTER TABLE t ALTER COLUMN c <type> [ENCRYPTED WITH]``
as an in-place encryption change (encrypt, re-encrypt or decrypt one column).

It checks the statement against a catalog snapshot and returns a frozen description that the
connection executes. It is pure like the rest of engine/sql: no DuckDB, no keys, no enclave.
A plain type change of a plaintext column is not its business (it returns None for that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.ae_nodes import AlterColumnEncryption, EncryptedWithColumnConstraint
from engine.sql.catalog import CatalogSnapshot
from engine.sql.declared_types import encryptable_type
from engine.sql.dialect import CELL_ALGORITHM, canonical_type_text, parse_statements
from engine.sql.plan import (
    CatalogChange,
    DropEncryptedColumns,
    EncryptionTarget,
    RegisterEncryptedColumn,
)

__all__ = [
    "ColumnEncryptionChange",
    "ChangeKind",
    "describe_alter_column_encryption",
    "describe_alter_column_encryption_sql",
]

ChangeKind = Literal["encrypt", "reencrypt", "decrypt"]


@dataclass(frozen=True)
class ColumnEncryptionChange:
    """One column's move between plaintext and ciphertext, or between keys and types.

    ``source`` is None for a plaintext column, ``target`` None when the result is plaintext.
    ``source_type`` is the declared type (encrypted) or DuckDB type (plaintext) of the column
    now, ``target_type`` the type it will have. ``storage_type`` is what DuckDB stores after
    the change (BLOB for ciphertext), and ``read_type`` the DuckDB type plaintext is read as
    before it is encrypted (None when the column holds ciphertext). ``catalog_changes`` are
    applied in the same transaction as the data.
    """

    table: str
    column: str
    source: EncryptionTarget | None
    source_type: str
    target: EncryptionTarget | None
    target_type: str
    storage_type: str
    read_type: str | None
    catalog_changes: tuple[CatalogChange, ...]
    catalog_version: int

    @property
    def kind(self) -> ChangeKind:
        """``encrypt`` (plaintext to cells), ``reencrypt`` or ``decrypt`` (cells to plaintext)."""
        if self.source is None:
            return "encrypt"
        return "reencrypt" if self.target is not None else "decrypt"

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def required_keys(self) -> tuple[str, ...]:
        """The CEK names the client needs, source first."""
        names = [t.cek_name for t in (self.source, self.target) if t is not None]
        return tuple(dict.fromkeys(names))


def _action(statement: exp.Expr) -> AlterColumnEncryption | None:
    if not isinstance(statement, exp.Alter) or str(statement.args.get("kind") or "") != "TABLE":
        return None
    actions = list(statement.args.get("actions") or [])
    found = [a for a in actions if isinstance(a, AlterColumnEncryption)]
    if not found:
        return None
    return found[0] if len(actions) == 1 else _too_many(statement)


def _too_many(statement: exp.Alter) -> AlterColumnEncryption | None:
    # Returned only when none of the actions needs in-place work; checked by the caller.
    actions = list(statement.args.get("actions") or [])
    if any(
        isinstance(a, AlterColumnEncryption) and a.args.get("encryption") is not None
        for a in actions
    ):
        raise NotSupportedError(
            "ALTER TABLE with ALTER COLUMN ... ENCRYPTED WITH must change one column and nothing "
            "else; run each change as its own statement"
        )
    return None


def describe_alter_column_encryption(
    statement: exp.Expr, catalog: CatalogSnapshot
) -> ColumnEncryptionChange | None:
    """The in-place change that ``statement`` asks for, or None when it asks for none.

    >>> from engine.sql.catalog import (ColumnEncryptionKey, ColumnEncryptionKeyValue,
    ...     ColumnInfo, ColumnMasterKey, TableInfo)
    >>> cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", b"x"),))
    >>> snap = CatalogSnapshot(3, (ColumnMasterKey("cmk1", "PEM_FILE", "k.pem"),), (cek,),
    ...                        (TableInfo("t", (ColumnInfo("c", "INTEGER"),)),))
    >>> sql = ("ALTER TABLE t ALTER COLUMN c INT ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, "
    ...        "ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')")
    >>> change = describe_alter_column_encryption(parse_statements(sql)[0], snap)
    >>> change.kind, change.storage_type, change.read_type, change.target.cek_name
    ('encrypt', 'BLOB', 'INTEGER', 'cek1')
    >>> describe_alter_column_encryption(
    ...     parse_statements("ALTER TABLE t ALTER COLUMN c BIGINT")[0], snap) is None
    True
    """
    action = _action(statement)
    if action is None:
        return None
    assert isinstance(statement, exp.Alter)
    table_name = statement.this.name if isinstance(statement.this, exp.Table) else ""
    info = catalog.table(table_name)  # ProgrammingError naming an unknown table
    current = info.column(action.this.name)
    encryption = action.args.get("encryption")
    if current.encryption is None and encryption is None:
        return None  # DuckDB's own ALTER COLUMN TYPE
    label = f"{info.name}.{current.name}"
    dtype = action.args["dtype"]
    written = str(dtype.meta.get("declared_type") or dtype.sql("duckdb"))

    source = None
    if current.encryption is not None:
        source = EncryptionTarget(
            info.name,
            current.name,
            catalog.cek(current.encryption.cek_name).name,
            current.encryption.encryption_type,
            current.declared_type,
        )
    target = None
    changes: tuple[CatalogChange, ...]
    if encryption is not None:
        target, changes = _target(label, info.name, current.name, written, encryption, catalog)
        storage_type, target_type = "BLOB", target.declared_type
    else:
        storage_type = target_type = canonical_type_text(written)
        changes = (DropEncryptedColumns(info.name, (current.name,)),)
    read_type = None
    if source is None:
        from engine.types import parse_sql_type

        assert target is not None
        read_type = parse_sql_type(target.declared_type).duckdb_type
    return ColumnEncryptionChange(
        table=info.name,
        column=current.name,
        source=source,
        source_type=current.declared_type,
        target=target,
        target_type=target_type,
        storage_type=storage_type,
        read_type=read_type,
        catalog_changes=changes,
        catalog_version=catalog.version,
    )


def _target(
    label: str,
    table: str,
    column: str,
    written: str,
    encryption: EncryptedWithColumnConstraint,
    catalog: CatalogSnapshot,
) -> tuple[EncryptionTarget, tuple[CatalogChange, ...]]:
    cek = catalog.cek(encryption.name)  # ProgrammingError naming an unknown key
    algorithm = str(encryption.args["algorithm"].name)
    if algorithm.upper() != CELL_ALGORITHM:
        raise NotSupportedError(
            f"{label}: ALGORITHM {algorithm!r} is not supported; the supported one is "
            f"'{CELL_ALGORITHM}'"
        )
    kind = encryption.args["encryption_type"].name.upper()
    if kind not in ("DETERMINISTIC", "RANDOMIZED"):
        raise ProgrammingError(f"{label}: ENCRYPTION_TYPE must be DETERMINISTIC or RANDOMIZED")
    declared = encryptable_type(label, written)
    target = EncryptionTarget(table, column, cek.name, kind, declared)
    change = RegisterEncryptedColumn(table, column, declared, cek.name, kind, CELL_ALGORITHM)
    return target, (change,)


def describe_alter_column_encryption_sql(
    text: str, catalog: CatalogSnapshot
) -> ColumnEncryptionChange | None:
    """Parse one statement and describe it; None unless it is an in-place encryption change.

    >>> describe_alter_column_encryption_sql("SELECT 1", CatalogSnapshot(1)) is None
    True
    """
    statements = parse_statements(text)
    if len(statements) != 1:
        return None
    return describe_alter_column_encryption(statements[0], catalog)

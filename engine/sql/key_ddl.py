"""Validate CMK and CEK DDL against a snapshot and turn it into catalog change records.

The host applies the records; a missing ENCRYPTED_VALUE or SIGNATURE stays None so the client
generates it. This module must not generate, wrap, sign or unwrap any key, and does no I/O.
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import ProgrammingError
from engine.sql.ae_nodes import (
    AlterColumnEncryptionKey,
    BinaryLiteral,
    CreateColumnEncryptionKey,
    CreateColumnMasterKey,
    DropColumnEncryptionKey,
    DropColumnMasterKey,
)
from engine.sql.catalog import CatalogSnapshot, ColumnEncryptionKeyValue
from engine.sql.plan import (
    AddCekValue,
    CatalogChange,
    CreateCek,
    CreateCmk,
    DropCek,
    DropCekValue,
    DropCmk,
)

__all__ = ["MAX_CEK_VALUES", "key_ddl_changes"]

# SQL Server allows at most two values per CEK: the old and the new CMK during a rotation.
MAX_CEK_VALUES = 2


def _bytes(node: exp.Expr | None) -> bytes | None:
    return node.to_bytes() if isinstance(node, BinaryLiteral) else None


def _value(spec: exp.Expr, catalog: CatalogSnapshot) -> ColumnEncryptionKeyValue:
    cmk = catalog.cmk(spec.name)  # raises ProgrammingError naming the unknown CMK
    algorithm = spec.args.get("algorithm")
    return ColumnEncryptionKeyValue(
        cmk_name=cmk.name,
        algorithm=algorithm.name if algorithm is not None else "RSA_OAEP",
        encrypted_value=_bytes(spec.args.get("encrypted_value")),
    )


def key_ddl_changes(statement: exp.Expr, catalog: CatalogSnapshot) -> tuple[CatalogChange, ...]:
    """Check one key DDL statement and return what it changes in the catalog.

    >>> from engine.sql.dialect import parse_statements
    >>> ddl = parse_statements(
    ...     "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    ...     "KEY_PATH = '/keys/cmk1.pem', ENCLAVE_COMPUTATIONS)")[0]
    >>> key_ddl_changes(ddl, CatalogSnapshot(1))
    (CreateCmk(name='cmk1', key_store_provider_name='PEM_FILE', key_path='/keys/cmk1.pem', \
allow_enclave_computations=True, signature=None),)
    """
    name = statement.this.name if isinstance(statement.this, exp.Expr) else ""
    if isinstance(statement, CreateColumnMasterKey):
        if catalog.has_cmk(name):
            raise ProgrammingError(f"column master key {name} already exists")
        return (
            CreateCmk(
                name=name,
                key_store_provider_name=statement.args["provider"].name,
                key_path=statement.args["key_path"].name,
                allow_enclave_computations=bool(statement.args.get("enclave_computations")),
                signature=_bytes(statement.args.get("signature")),
            ),
        )
    if isinstance(statement, DropColumnMasterKey):
        cmk = catalog.cmk(name)
        users = catalog.ceks_using_cmk(cmk.name)
        if users:
            raise ProgrammingError(
                f"column master key {cmk.name} is still used by column encryption key(s) "
                f"{', '.join(users)}; drop those keys or their values under it first"
            )
        return (DropCmk(cmk.name),)
    if isinstance(statement, CreateColumnEncryptionKey):
        if catalog.has_cek(name):
            raise ProgrammingError(f"column encryption key {name} already exists")
        values = tuple(_value(spec, catalog) for spec in statement.expressions)
        if len(values) > MAX_CEK_VALUES:
            raise ProgrammingError(
                f"column encryption key {name} has {len(values)} values; at most "
                f"{MAX_CEK_VALUES} are allowed (one per CMK during a rotation)"
            )
        cmks = [v.cmk_name.casefold() for v in values]
        if len(set(cmks)) != len(cmks):
            raise ProgrammingError(
                f"column encryption key {name} lists the same column master key twice"
            )
        return (CreateCek(name, values),)
    if isinstance(statement, AlterColumnEncryptionKey):
        cek = catalog.cek(name)
        spec = statement.expression
        if statement.args["action"] == "ADD":
            value = _value(spec, catalog)
            if any(v.cmk_name.casefold() == value.cmk_name.casefold() for v in cek.values):
                raise ProgrammingError(
                    f"column encryption key {cek.name} already has a value under column "
                    f"master key {value.cmk_name}"
                )
            if len(cek.values) >= MAX_CEK_VALUES:
                raise ProgrammingError(
                    f"column encryption key {cek.name} already has {MAX_CEK_VALUES} values; "
                    "drop one before adding another"
                )
            return (AddCekValue(cek.name, value),)
        cmk_name = spec.name
        matching = [v for v in cek.values if v.cmk_name.casefold() == cmk_name.casefold()]
        if not matching:
            raise ProgrammingError(
                f"column encryption key {cek.name} has no value under column master key {cmk_name}"
            )
        if len(cek.values) == 1:
            raise ProgrammingError(
                f"column encryption key {cek.name} has only this value; add a value under "
                "another column master key before dropping it, or drop the key"
            )
        return (DropCekValue(cek.name, matching[0].cmk_name),)
    if isinstance(statement, DropColumnEncryptionKey):
        cek = catalog.cek(name)
        users = catalog.columns_using_cek(cek.name)
        if users:
            raise ProgrammingError(
                f"column encryption key {cek.name} is still used by column(s) "
                f"{', '.join(users)}; drop or decrypt those columns first"
            )
        return (DropCek(cek.name),)
    raise ProgrammingError(f"{type(statement).__name__} is not a key DDL statement")

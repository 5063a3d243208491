"""sqlglot AST node classes for the Always Encrypted DDL of the EnclaveSQL dialect.

They only hold what was written; validation against the catalog happens in describe().
This module must not parse, generate SQL or look at keys; dialect.py does the text work.
"""

from __future__ import annotations

from sqlglot import exp

__all__ = [
    "AlterColumnEncryption",
    "AlterColumnEncryptionKey",
    "BinaryLiteral",
    "ColumnEncryptionKeyValueSpec",
    "CreateColumnEncryptionKey",
    "CreateColumnMasterKey",
    "DropColumnEncryptionKey",
    "DropColumnMasterKey",
    "EncryptedWithColumnConstraint",
    "ExportDatabase",
    "ImportDatabase",
    "KEY_DDL_NODES",
]


class BinaryLiteral(exp.Expression):
    """A T-SQL binary literal such as ``0x01AB``; ``this`` holds the hex digits only.

    >>> BinaryLiteral(this="01ab").to_bytes()
    b'\\x01\\xab'
    """

    arg_types = {"this": True}

    def to_bytes(self) -> bytes:
        return bytes.fromhex(self.name)


class CreateColumnMasterKey(exp.Expression):
    """CREATE COLUMN MASTER KEY: name, provider, key path, enclave flag, optional signature."""

    arg_types = {
        "this": True,
        "provider": True,
        "key_path": True,
        "enclave_computations": False,
        "signature": False,
    }


class DropColumnMasterKey(exp.Expression):
    """DROP COLUMN MASTER KEY name."""

    arg_types = {"this": True}


class ColumnEncryptionKeyValueSpec(exp.Expression):
    """One ``(COLUMN_MASTER_KEY = ..., ALGORITHM = ..., ENCRYPTED_VALUE = ...)`` group.

    ``algorithm`` is absent only in ``DROP VALUE``; ``encrypted_value`` may be absent
    anywhere, in which case the client generates and wraps the key.
    """

    arg_types = {"this": True, "algorithm": False, "encrypted_value": False}


class CreateColumnEncryptionKey(exp.Expression):
    """CREATE COLUMN ENCRYPTION KEY name WITH VALUES (...)[, (...)]."""

    arg_types = {"this": True, "expressions": True}


class AlterColumnEncryptionKey(exp.Expression):
    """ALTER COLUMN ENCRYPTION KEY name ADD|DROP VALUE (...); ``action`` is "ADD" or "DROP"."""

    arg_types = {"this": True, "action": True, "expression": True}


class DropColumnEncryptionKey(exp.Expression):
    """DROP COLUMN ENCRYPTION KEY name."""

    arg_types = {"this": True}


class EncryptedWithColumnConstraint(exp.Expression, exp.ColumnConstraintKind):
    """The column option ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY, ENCRYPTION_TYPE, ALGORITHM).

    ``encryption_type`` is the upper-case string "DETERMINISTIC" or "RANDOMIZED".
    """

    arg_types = {"this": True, "encryption_type": True, "algorithm": True}


class AlterColumnEncryption(exp.Expression):
    """T-SQL ``ALTER COLUMN c <type> [ENCRYPTED WITH (...)]`` inside ALTER TABLE.

    Without ``encryption`` it asks for a plaintext column (decrypt in place when encrypted).
    """

    arg_types = {"this": True, "dtype": True, "encryption": False}


class ExportDatabase(exp.Expression):
    """DuckDB's ``EXPORT DATABASE [db TO] 'dir' [(options)]``: ``this`` is the directory, ``db``
    the optional database name and ``options`` the option list exactly as written (a string)."""

    arg_types = {"this": True, "db": False, "options": False}


class ImportDatabase(exp.Expression):
    """DuckDB's ``IMPORT DATABASE 'dir'``: ``this`` is the directory written by EXPORT."""

    arg_types = {"this": True}


# Statements that only change key metadata; the host applies them, DuckDB never sees them.
KEY_DDL_NODES: tuple[type[exp.Expression], ...] = (
    CreateColumnMasterKey,
    DropColumnMasterKey,
    CreateColumnEncryptionKey,
    AlterColumnEncryptionKey,
    DropColumnEncryptionKey,
)

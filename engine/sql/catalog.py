"""The catalog snapshot model: keys, tables and column encryption, as frozen dataclasses.

A snapshot is an immutable picture of the catalog at one version; the host builds it from
DuckDB, the SQL layer only reads it. This module must do no I/O and never hold a key: a CEK
appears only as its wrapped ENCRYPTED_VALUE envelope (or None when the client will make one).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ProgrammingError

__all__ = [
    "CatalogSnapshot",
    "ColumnEncryptionKey",
    "ColumnEncryptionKeyValue",
    "ColumnInfo",
    "ColumnMasterKey",
    "Encryption",
    "EncryptionType",
    "TableInfo",
]

EncryptionType = Literal["DETERMINISTIC", "RANDOMIZED"]


def _key(name: str) -> str:
    # DuckDB folds unquoted names case-insensitively; so does T-SQL's default collation.
    return name.casefold()


def _unknown(kind: str, name: str, known: Iterable[str]) -> ProgrammingError:
    choices = list(known)
    close = difflib.get_close_matches(name, choices, n=1) or difflib.get_close_matches(
        name.casefold(), [c.casefold() for c in choices], n=1
    )
    hint = f"; did you mean {close[0]}?" if close else ""
    return ProgrammingError(f"unknown {kind} {name}{hint}")


@dataclass(frozen=True)
class ColumnMasterKey:
    """A CMK's metadata: where the client finds it, and whether enclaves may use its CEKs."""

    name: str
    key_store_provider_name: str
    key_path: str
    allow_enclave_computations: bool = False
    signature: bytes | None = None


@dataclass(frozen=True)
class ColumnEncryptionKeyValue:
    """One wrapped value of a CEK, under one CMK (spec section 2.1).

    ``key_check`` binds the value to its CEK's name (docs/keys.md): the client computes it when
    the value is created and verifies it before using the unwrapped key. None until then.
    """

    cmk_name: str
    algorithm: str
    encrypted_value: bytes | None
    key_check: bytes | None = None


@dataclass(frozen=True)
class ColumnEncryptionKey:
    """A CEK: a name and one or two wrapped values (two while its CMK is rotated)."""

    name: str
    values: tuple[ColumnEncryptionKeyValue, ...]


@dataclass(frozen=True)
class Encryption:
    """How one column is encrypted."""

    cek_name: str
    encryption_type: EncryptionType
    algorithm: str = "AEAD_AES_256_CBC_HMAC_SHA_256"


@dataclass(frozen=True)
class ColumnInfo:
    """A column with its declared (plaintext) type as a canonical string such as 'CHAR(11)'."""

    name: str
    declared_type: str
    encryption: Encryption | None = None
    # The hidden BIGINT column that holds the tag of each cell (engine.sql.tag_columns), for
    # DETERMINISTIC columns of tables created since tags exist; None: lookups scan the cells.
    tag_column: str | None = None
    # True when a single-column PRIMARY KEY, UNIQUE or CREATE INDEX covers the column: DuckDB's
    # index already finds equal cells, so lookups leave the tag out (it would stop the index).
    indexed: bool = False


@dataclass(frozen=True)
class TableInfo:
    """A table (plaintext or not) and its columns in declaration order."""

    name: str
    columns: tuple[ColumnInfo, ...]

    @property
    def encrypted(self) -> bool:
        """True when any column is encrypted."""
        return any(column.encryption is not None for column in self.columns)

    def column(self, name: str) -> ColumnInfo:
        """The column called ``name`` (case-insensitive); ProgrammingError when unknown.

        >>> TableInfo("t", (ColumnInfo("a", "INT"),)).column("A").declared_type
        'INT'
        """
        for column in self.columns:
            if _key(column.name) == _key(name):
                return column
        raise _unknown(f"column in table {self.name}:", name, (c.name for c in self.columns))


@dataclass(frozen=True)
class CatalogSnapshot:
    """An immutable catalog at ``version``; lookups are case-insensitive and raise when unknown.

    >>> cmk = ColumnMasterKey("cmk1", "PEM_FILE", "/k.pem", allow_enclave_computations=True)
    >>> cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),))
    >>> snap = CatalogSnapshot(1, (cmk,), (cek,), ())
    >>> snap.enclave_enabled("CEK1")
    True
    >>> snap.table("patient")
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: unknown table patient
    """

    version: int
    cmks: tuple[ColumnMasterKey, ...] = ()
    ceks: tuple[ColumnEncryptionKey, ...] = ()
    tables: tuple[TableInfo, ...] = field(default=())

    def has_table(self, name: str) -> bool:
        return any(_key(t.name) == _key(name) for t in self.tables)

    def table(self, name: str) -> TableInfo:
        for table in self.tables:
            if _key(table.name) == _key(name):
                return table
        raise _unknown("table", name, (t.name for t in self.tables))

    def column(self, table: str, column: str) -> ColumnInfo:
        return self.table(table).column(column)

    def has_cmk(self, name: str) -> bool:
        return any(_key(k.name) == _key(name) for k in self.cmks)

    def cmk(self, name: str) -> ColumnMasterKey:
        for key in self.cmks:
            if _key(key.name) == _key(name):
                return key
        raise _unknown("column master key", name, (k.name for k in self.cmks))

    def has_cek(self, name: str) -> bool:
        return any(_key(k.name) == _key(name) for k in self.ceks)

    def cek(self, name: str) -> ColumnEncryptionKey:
        for key in self.ceks:
            if _key(key.name) == _key(name):
                return key
        raise _unknown("column encryption key", name, (k.name for k in self.ceks))

    def enclave_enabled(self, cek_name: str) -> bool:
        """True when every CMK that wraps this CEK allows enclave computations.

        During a CMK rotation a CEK has two values; requiring both keeps the answer from
        depending on which value a client happens to unwrap.
        """
        values = self.cek(cek_name).values
        return bool(values) and all(self.cmk(v.cmk_name).allow_enclave_computations for v in values)

    def ceks_using_cmk(self, cmk_name: str) -> tuple[str, ...]:
        """Names of CEKs with a value wrapped by this CMK."""
        return tuple(
            k.name for k in self.ceks if any(_key(v.cmk_name) == _key(cmk_name) for v in k.values)
        )

    def columns_using_cek(self, cek_name: str) -> tuple[str, ...]:
        """``table.column`` names of columns encrypted with this CEK."""
        return tuple(
            f"{t.name}.{c.name}"
            for t in self.tables
            for c in t.columns
            if c.encryption is not None and _key(c.encryption.cek_name) == _key(cek_name)
        )

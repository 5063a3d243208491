"""The plan that describe() returns: what to run, which values to encrypt, what to decrypt.

It is the equivalent of SQL Server's sp_describe_parameter_encryption answer, as frozen
dataclasses that can be cached per statement text and catalog version. It must hold no key
material and no plaintext of an encrypted column except literals the user wrote, which the
client encrypts before anything reaches the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import ProgrammingError
from engine.sql.catalog import ColumnEncryptionKeyValue, EncryptionType

__all__ = [
    "AddCekValue",
    "CatalogChange",
    "CreateCek",
    "CreateCmk",
    "DropCek",
    "DropCekValue",
    "DropCmk",
    "DropEncryptedColumns",
    "EnclaveOperation",
    "EncryptionTarget",
    "ParameterSpec",
    "Plan",
    "PlanKind",
    "RegisterEncryptedColumn",
    "ResultColumn",
    "check_parameter_count",
]

PlanKind = Literal["query", "dml", "ddl", "key_ddl", "other"]


@dataclass(frozen=True)
class EncryptionTarget:
    """An encrypted column a value comes from or goes to: the client encrypts or decrypts with
    ``cek_name`` and ``encryption_type``, normalizing as ``declared_type`` says."""

    table: str
    column: str
    cek_name: str
    encryption_type: EncryptionType
    declared_type: str

    @property
    def label(self) -> str:
        """``table.column``, as error messages name it."""
        return f"{self.table}.{self.column}"

    def same_key(self, other: EncryptionTarget) -> bool:
        """True when a ciphertext of one is a valid ciphertext of the other."""
        return (
            self.cek_name.casefold() == other.cek_name.casefold()
            and self.encryption_type == other.encryption_type
            and self.declared_type == other.declared_type
        )


@dataclass(frozen=True)
class ParameterSpec:
    """One ``?`` of ``Plan.sql``: ``("user", i)`` is the caller's i-th parameter (0-based) and
    ``("literal", value)`` a literal lifted out of the statement. ``target`` set means the
    client must encrypt the value for that column first."""

    source: tuple[Literal["user"], int] | tuple[Literal["literal"], Any]
    target: EncryptionTarget | None


@dataclass(frozen=True)
class ResultColumn:
    """One output column; ``target`` set means it carries ciphertext the client decrypts."""

    name: str
    declared_type: str | None
    target: EncryptionTarget | None


@dataclass(frozen=True)
class EnclaveOperation:
    """An operation that must run in the enclave (filled in by the enclave-query work)."""

    target: EncryptionTarget
    operator: str


@dataclass(frozen=True)
class CreateCmk:
    name: str
    key_store_provider_name: str
    key_path: str
    allow_enclave_computations: bool
    signature: bytes | None


@dataclass(frozen=True)
class DropCmk:
    name: str


@dataclass(frozen=True)
class CreateCek:
    """``values[i].encrypted_value`` is None where the client must generate and wrap the key."""

    name: str
    values: tuple[ColumnEncryptionKeyValue, ...]


@dataclass(frozen=True)
class AddCekValue:
    cek_name: str
    value: ColumnEncryptionKeyValue


@dataclass(frozen=True)
class DropCekValue:
    cek_name: str
    cmk_name: str


@dataclass(frozen=True)
class DropCek:
    name: str


@dataclass(frozen=True)
class RegisterEncryptedColumn:
    table: str
    column: str
    declared_type: str
    cek_name: str
    encryption_type: EncryptionType
    algorithm: str


@dataclass(frozen=True)
class DropEncryptedColumns:
    """Forget encryption metadata of ``columns`` of ``table`` (all of them when empty)."""

    table: str
    columns: tuple[str, ...] = ()


CatalogChange = (
    CreateCmk
    | DropCmk
    | CreateCek
    | AddCekValue
    | DropCekValue
    | DropCek
    | RegisterEncryptedColumn
    | DropEncryptedColumns
)


@dataclass(frozen=True)
class Plan:
    """What the host runs and the client must prepare for one statement.

    ``sql`` is None for key DDL (the host applies ``catalog_changes`` only).
    ``user_parameter_count`` is the number of ``?`` the caller wrote.
    """

    kind: PlanKind
    sql: str | None
    parameters: tuple[ParameterSpec, ...] = ()
    result_columns: tuple[ResultColumn, ...] = ()
    required_keys: tuple[str, ...] = ()
    enclave_operations: tuple[EnclaveOperation, ...] = ()
    catalog_version: int = 0
    catalog_changes: tuple[CatalogChange, ...] = ()
    user_parameter_count: int = 0


def check_parameter_count(plan: Plan, parameters: Sequence[object]) -> None:
    """Raise ProgrammingError unless ``parameters`` has one value per ``?`` of the statement.

    >>> check_parameter_count(Plan("query", "SELECT ?", user_parameter_count=1), [])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: the statement has 1 parameter marker(s) (?) but 0 value...
    """
    if len(parameters) != plan.user_parameter_count:
        raise ProgrammingError(
            f"the statement has {plan.user_parameter_count} parameter marker(s) (?) "
            f"but {len(parameters)} value(s) were given"
        )

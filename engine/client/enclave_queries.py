"""The client's part of one enclave query: comparands to cells, grants, the package, the values.

For each EnclaveOperation of a plan it encrypts the comparands under the column's CEK, builds
the operator's constant blob and grants exactly that (key, operator, type, constant); then it
admits the CEKs (CMK enclave signature) and seals them with the grants for the statement text.
It must not talk to the host or DuckDB, and it never sends a CEK that no grant uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from engine.client.codec import encrypt_column
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_authorization import (
    Grant,
    aggregate,
    between,
    compare,
    group,
    in_list,
    like,
    rank,
)
from engine.client.enclave_package import Operator, TypeCode
from engine.client.enclave_session import EnclaveSession
from engine.client.parameters import KeyLookup, coerce_text, encrypt_parameters
from engine.errors import ProgrammingError
from engine.sql.catalog import CatalogSnapshot
from engine.sql.plan import (
    ENCLAVE_ROLES,
    AggregateCall,
    EnclaveExecution,
    EnclaveOperation,
    ParameterSpec,
    Plan,
)
from engine.types import NormalizationForm, parse_sql_type

__all__ = [
    "EnclaveValues",
    "admit_cek",
    "enclave_grant",
    "enclave_parameter_values",
    "integer_sums",
]


@dataclass(frozen=True)
class EnclaveValues:
    """The host's parameter values (the query id left as None, the host fills it in after
    begin_query) and what else the host needs: the sealed package and the aggregate calls."""

    values: list[object]
    execution: EnclaveExecution


def _operand_value(source: tuple[str, Any], user: Sequence[object]) -> object:
    return user[source[1]] if source[0] == "user" else source[1]


def _cell(value: object, operation: EnclaveOperation, cek: bytes) -> bytes:
    target = operation.target
    if value is None:
        raise ProgrammingError(
            f"a NULL comparand for `{operation.construct}` on the encrypted column "
            f"{target.label} is not supported; use IS NULL"
        )
    cells = encrypt_column(
        coerce_text([value], target.declared_type),
        cek,
        "RANDOMIZED",  # the comparand only ever reaches the enclave, never an equality join
        target.declared_type,
        column=target.label,
    )
    cell = cells[0].as_py()
    assert isinstance(cell, bytes)
    return cell


def enclave_grant(operation: EnclaveOperation, user: Sequence[object], key_for: KeyLookup) -> Grant:
    """The grant of one operation, with its comparands encrypted into the constant blob.

    >>> import os
    >>> from engine.sql.plan import EncryptionTarget
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> operation = EnclaveOperation(target, "LT", "INT64", (("user", 0),), None, "<")
    >>> key = os.urandom(32)
    >>> grant = enclave_grant(operation, [5], lambda name: key)
    >>> grant.operator.name, grant.type_code.name, len(grant.constant)
    ('LT', 'INT64', 65)
    """
    name = operation.target.cek_name
    type_code = TypeCode[operation.type_form]
    operator = Operator[operation.operator]
    if operator == Operator.RANK:
        return rank(name, type_code)
    if operator == Operator.GROUP:
        return group(name, type_code)
    if operation.result_column is not None:
        return aggregate(name, type_code, operator)
    if not operation.operands:
        return compare(name, type_code, operator, None)
    cek = key_for(name)
    cells = [_cell(_operand_value(s, user), operation, cek) for s in operation.operands]
    if operator == Operator.BETWEEN:
        return between(name, type_code, cells[0], cells[1])
    if operator == Operator.IN:
        return in_list(name, type_code, cells)
    if operator == Operator.LIKE:
        return like(name, type_code, cells[0], operation.escape)
    return compare(name, type_code, operator, cells[0])


def admit_cek(
    session: EnclaveSession, cek_name: str, snapshot: CatalogSnapshot, resolver: ColumnKeyResolver
) -> None:
    """Verify every CMK that wraps the CEK for enclave use (each raises on failure).

    Enclave queries and enclave re-encryption both admit their keys this way.
    (No doctest: it needs an attested session; tests/e2e/test_enclave_queries.py runs it.)
    """
    for value in snapshot.cek(cek_name).values:
        cmk = snapshot.cmk(value.cmk_name)
        session.verify_cek(
            cek_name,
            resolver,
            cmk_provider=cmk.key_store_provider_name,
            cmk_key_path=cmk.key_path,
            allow_enclave_computations=cmk.allow_enclave_computations,
            signature=cmk.signature,
            cmk_name=cmk.name,
        )


def enclave_parameter_values(
    plan: Plan,
    user: Sequence[object],
    key_for: KeyLookup,
    session: EnclaveSession,
    snapshot: CatalogSnapshot,
    resolver: ColumnKeyResolver,
    *,
    statement_text: str | None = None,
) -> EnclaveValues:
    """Values for every ``?`` of ``plan.sql`` and the package that authorizes its operations.

    Ordinary parameters are encrypted as ``encrypt_parameters`` does. The package is built
    for ``statement_text`` (default ``plan.sql``), which must be the text the host executes.
    (No doctest: it needs an attested session; tests/e2e/test_enclave_queries.py runs it.)
    """
    if plan.sql is None or not plan.enclave_operations:
        raise ProgrammingError("this statement has no enclave operations")
    grants: dict[EnclaveOperation, Grant] = {
        operation: enclave_grant(operation, user, key_for) for operation in plan.enclave_operations
    }
    names = sorted({operation.target.cek_name for operation in plan.enclave_operations})
    for name in names:
        admit_cek(session, name, snapshot, resolver)
    ordinary = [i for i, s in enumerate(plan.parameters) if s.source[0] not in ENCLAVE_ROLES]
    encrypted = encrypt_parameters([plan.parameters[i] for i in ordinary], user, key_for)
    values: list[object] = [None] * len(plan.parameters)
    for index, value in zip(ordinary, encrypted, strict=True):
        values[index] = value
    for index, spec in enumerate(plan.parameters):
        if spec.source[0] in ENCLAVE_ROLES:
            values[index] = _role_value(spec, grants, session)
    package = session.package_for(
        statement_text if statement_text is not None else plan.sql,
        {name: key_for(name) for name in names},
        list(dict.fromkeys(grants.values())),
    )
    calls = tuple(
        AggregateCall(
            operation.result_column,
            session.cek_id(operation.target.cek_name),
            int(grants[operation].type_code),
            int(grants[operation].operator),
            _decimal_scale(operation.target.declared_type),
            kind=_CALL_KINDS.get(operation.operator, "aggregate"),
            stage=operation.stage,
        )
        for operation in plan.enclave_operations
        if operation.result_column is not None
    )
    return EnclaveValues(values, EnclaveExecution(session.session_id, package, calls))


_CALL_KINDS: dict[str, Literal["aggregate", "rank", "group"]] = {"RANK": "rank", "GROUP": "group"}


def integer_sums(plan: Plan, table: pa.Table) -> pa.Table:
    """SUM of an integer column as DuckDB gives it (HUGEINT, a Python int), where it fits
    BIGINT; larger sums stay DECIMAL(38,0) values.

    >>> from engine.sql.plan import EncryptionTarget, ResultColumn
    >>> target = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "INTEGER")
    >>> sum_op = EnclaveOperation(target, "SUM", "INT64", result_column=0,
    ...                           result_type="DECIMAL(38,0)")
    >>> plan = Plan("query", "SELECT 1", enclave_operations=(sum_op,))
    >>> import decimal
    >>> column = pa.array([decimal.Decimal(7), None], pa.decimal128(38, 0))
    >>> integer_sums(plan, pa.table({"s": column})).column("s").to_pylist()
    [7, None]
    """
    for operation in plan.enclave_operations:
        if (operation.operator, operation.type_form) != ("SUM", "INT64"):
            continue
        index = operation.result_column
        if index is None or index >= table.num_columns:
            continue
        column = table.column(index)
        if not pa.types.is_decimal(column.type):
            continue
        try:
            as_integers = pc.cast(column, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # beyond BIGINT: keep the exact decimal
        table = table.set_column(index, table.column_names[index], as_integers)
    return table


def _decimal_scale(declared_type: str) -> int:
    sql_type = parse_sql_type(declared_type)
    return (sql_type.scale or 0) if sql_type.form is NormalizationForm.DECIMAL else 0


def _role_value(
    spec: ParameterSpec, grants: dict[EnclaveOperation, Grant], session: EnclaveSession
) -> object:
    role, operation = spec.source
    if role == "enclave_query":
        return None  # the host's: it learns the query id from begin_query
    assert isinstance(operation, EnclaveOperation)
    grant = grants[operation]
    if role == "enclave_cek":
        return session.cek_id(operation.target.cek_name)
    if role == "enclave_type":
        return int(grant.type_code)
    if role == "enclave_operator":
        return int(grant.operator)
    return grant.constant

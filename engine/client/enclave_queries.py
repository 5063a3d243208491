"""The client's part of one enclave query: comparands to cells, grants, the package, the values.

For each EnclaveOperation of a plan it encrypts the comparands under the column's CEK, builds
the operator's constant blob and grants exactly that (key, operator, type, constant); then it
admits the CEKs (CMK enclave signature) and seals them with the grants for the statement text.
It must not talk to the host or DuckDB, and it never sends a CEK that no grant uses.
"""

from __future__ import annotations

import itertools
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
    aggregate_expression,
    between,
    compare,
    group,
    in_list,
    like,
    rank,
)
from engine.client.enclave_package import Operator, TypeCode, expression_program, top_k_constant
from engine.client.enclave_session import EnclaveSession
from engine.client.parameters import KeyLookup, coerce_text, encrypt_parameters
from engine.errors import NotSupportedError, ProgrammingError
from engine.predicate_program import pack_predicates
from engine.sql.catalog import CatalogSnapshot
from engine.sql.plan import (
    ENCLAVE_ROLES,
    AggregateCall,
    EnclaveExecution,
    EnclaveOperation,
    ParameterSpec,
    Plan,
)
from engine.sql.rewrite_inexact_comparisons import exact_comparand
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


def _exact_comparands(operation: EnclaveOperation, values: list[object]) -> list[object]:
    """The comparands as values of the column's type, never rounded: a range bound between two
    values of the type becomes the nearer one (``x < 1.5`` is ``x < 2`` on INTEGER), an IN item
    no cell can equal is replaced by another item. Where the answer would not depend on the
    cells (``x = 1.5`` on INTEGER), refuse rather than compare with a different value."""
    operator = operation.operator
    declared = operation.target.declared_type
    if operator in ("EQ", "NE", "LT", "LE", "GT", "GE"):
        found = [exact_comparand(values[0], declared, operator)]
    elif operator == "BETWEEN" and len(values) == 2:
        found = [exact_comparand(values[0], declared, "GE")]
        found.append(exact_comparand(values[1], declared, "LE"))
    elif operator == "IN":
        found = [exact_comparand(value, declared, "EQ") for value in values]
        matching = [value for kind, value in found if kind == "value"]
        if matching:
            # An item that equals no cell changes nothing; a copy of another keeps the count.
            return [value if kind == "value" else matching[0] for kind, value in found]
    else:
        return values
    if any(kind != "value" for kind, _ in found):
        raise NotSupportedError(
            f"a value compared with the encrypted column {operation.target.label} "
            f"({declared}) by `{operation.construct}` is not a {declared} value or lies "
            "outside its range, and the comparison has no exact equivalent the enclave can "
            "run; pass a value of the column's type (a number literal in the SQL text is "
            "rewritten exactly, as DuckDB would answer)"
        )
    return [value for _, value in found]


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
    if operator == Operator.TOP_K:
        return _top_k_grant(operation, user, type_code)
    if operator == Operator.GROUP:
        return group(name, type_code)
    if operation.result_column is not None:
        return aggregate(name, type_code, operator)
    if not operation.operands:
        return compare(name, type_code, operator, None)
    cek = key_for(name)
    values = _exact_comparands(operation, [_operand_value(s, user) for s in operation.operands])
    cells = [_cell(value, operation, cek) for value in values]
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
    # An expression aggregate needs one grant per key its program reads; the first is its own.
    expression_grants = {
        operation: _expression_grants(operation, session)
        for operation in plan.enclave_operations
        if operation.expression is not None
    }
    grants: dict[EnclaveOperation, Grant] = {
        operation: (
            expression_grants[operation][0]
            if operation in expression_grants
            else enclave_grant(operation, user, key_for)
        )
        for operation in plan.enclave_operations
    }
    names = sorted(
        {operation.target.cek_name for operation in plan.enclave_operations}
        | {grant.cek_name for extra in expression_grants.values() for grant in extra}
    )
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
        list(dict.fromkeys([*grants.values(), *itertools.chain(*expression_grants.values())])),
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
            constant=(
                grants[operation].constant
                if operation.operator in ("TOP_K", "SUM_EXPR", "AVG_EXPR")
                else b""
            ),
            source_column=operation.source_column,
        )
        for operation in plan.enclave_operations
        if operation.result_column is not None
    )
    return EnclaveValues(values, EnclaveExecution(session.session_id, package, calls))


_CALL_KINDS: dict[str, Literal["aggregate", "rank", "group", "top_k", "expression"]] = {
    "RANK": "rank",
    "GROUP": "group",
    "TOP_K": "top_k",
    "SUM_EXPR": "expression",
    "AVG_EXPR": "expression",
}


def _row_count(source: tuple[str, Any], user: Sequence[object], clause: str) -> int | None:
    """A LIMIT or OFFSET value (None: no limit), checked as DuckDB would take it."""
    value = _operand_value(source, user)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProgrammingError(
            f"{clause} of an ORDER BY over an encrypted column needs a non-negative integer "
            f"(a {type(value).__name__} was given, or a negative number); pass an int >= 0"
        )
    return value


def _top_k_grant(operation: EnclaveOperation, user: Sequence[object], type_code: TypeCode) -> Grant:
    """TOP_K for ORDER BY ... LIMIT: k is LIMIT + OFFSET, so every row the answer needs is kept.

    The operands are (LIMIT, OFFSET, descending, nulls first); the client reads LIMIT and OFFSET
    from the caller's parameters itself, so the host cannot widen what the enclave returns.
    """
    limit_source, offset_source, descending, nulls_first = operation.operands
    limit = _row_count(limit_source, user, "LIMIT")
    offset = _row_count(offset_source, user, "OFFSET") or 0
    k = 2**64 - 1 if limit is None else limit + offset
    constant = top_k_constant(k, descending=bool(descending[1]), nulls_first=bool(nulls_first[1]))
    return Grant(operation.target.cek_name, Operator.TOP_K, type_code, constant)


def _expression_grants(operation: EnclaveOperation, session: EnclaveSession) -> tuple[Grant, ...]:
    """The grants of a SUM_EXPR or AVG_EXPR: its program names the session's key ids, so the
    client builds it here, and the host must pass exactly these bytes."""
    expression = operation.expression
    assert expression is not None
    slots = [
        (
            None if slot.target is None else session.cek_id(slot.target.cek_name),
            TypeCode[slot.type_form],
            slot.scale,
        )
        for slot in expression.slots
    ]
    program = expression_program(slots, expression.code)
    names = [slot.target.cek_name for slot in expression.slots if slot.target is not None]
    return aggregate_expression(
        names, TypeCode[operation.type_form], Operator[operation.operator], program
    )


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
        integer_expression = operation.expression is not None and operation.expression.integer
        if (operation.operator, operation.type_form) != ("SUM", "INT64") and not (
            operation.operator == "SUM_EXPR" and integer_expression
        ):
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
    if role == "enclave_program":
        assert isinstance(operation, tuple)
        return pack_predicates(
            [
                (
                    session.cek_id(each.target.cek_name),
                    int(grants[each].type_code),
                    int(grants[each].operator),
                    grants[each].constant,
                )
                for each in operation
            ]
        )
    assert isinstance(operation, EnclaveOperation)
    grant = grants[operation]
    if role == "enclave_cek":
        return session.cek_id(operation.target.cek_name)
    if role == "enclave_type":
        return int(grant.type_code)
    if role == "enclave_operator":
        return int(grant.operator)
    return grant.constant

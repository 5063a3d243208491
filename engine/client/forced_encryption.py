"""Parameters the caller requires to be encrypted: ``engine.Encrypted(value)``.

The host keeps the catalog, so a hostile host can claim that a column is stored in plaintext,
and the client would then send that column's values as they are. A value wrapped in
``Encrypted`` is sent only if the statement encrypts its ``?`` (for a column under a CEK, or as
an enclave comparand); otherwise the statement is refused before anything reaches the host.
SQL Server's drivers call this forcing column encryption. This module only checks and unwraps:
it must not encrypt, and it never shows a wrapped value.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import ProgrammingError
from engine.sql.plan import Plan

__all__ = ["Encrypted", "unwrap_forced", "unwrap_forced_column"]


class Encrypted:
    """A parameter value that must leave the client encrypted.

    >>> Encrypted("123-45-6789")
    Encrypted(<hidden>)
    """

    __slots__ = ("value",)
    value: object

    def __init__(self, value: object) -> None:
        self.value = value.value if isinstance(value, Encrypted) else value

    def __repr__(self) -> str:
        return "Encrypted(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encrypted) and other.value == self.value

    def __hash__(self) -> int:
        return hash((Encrypted, self.value))


# The enclave operators whose operands the client encrypts into cells (enclave_grant).
_ENCRYPTED_OPERANDS = frozenset({"EQ", "NE", "LT", "LE", "GT", "GE", "BETWEEN", "IN", "LIKE"})


def _encrypted_user_indexes(plan: Plan) -> set[int]:
    """The caller's ``?`` (0-based) that every use in ``plan`` encrypts."""
    encrypted: set[int] = set()
    plain: set[int] = set()
    for spec in plan.parameters:
        if spec.source[0] == "user":
            index = spec.source[1]
            assert isinstance(index, int)
            (encrypted if spec.target is not None else plain).add(index)
    for operation in plan.enclave_operations:
        if operation.operator not in _ENCRYPTED_OPERANDS:
            continue  # TOP_K's LIMIT and OFFSET travel as plain numbers
        for source, value in operation.operands:
            if source == "user":
                encrypted.add(value)
    return encrypted - plain


def _needs_column_encryption() -> ProgrammingError:
    return ProgrammingError(
        "a parameter marked engine.Encrypted needs column_encryption=True on the connection; "
        "the statement was not sent"
    )


def _sent_in_plaintext(index: int) -> ProgrammingError:
    return ProgrammingError(
        f"parameter {index + 1} is marked engine.Encrypted, but the statement would send it in "
        "plaintext: the catalog the host returned does not encrypt the column it is compared "
        "with or stored in. If that column is not meant to be encrypted, drop the marker; if it "
        "is, the host may have altered the catalog. The statement was not sent"
    )


def unwrap_forced(
    plan: Plan, parameters: Sequence[object], *, column_encryption: bool
) -> Sequence[object]:
    """``parameters`` with each ``Encrypted`` unwrapped, after checking that the statement
    encrypts it; ProgrammingError (naming the parameter, never its value) when it does not.

    >>> from engine.sql.plan import ParameterSpec
    >>> plan = Plan("query", "SELECT ?", (ParameterSpec(("user", 0), None),),
    ...             user_parameter_count=1)
    >>> unwrap_forced(plan, [1], column_encryption=True)
    [1]
    >>> unwrap_forced(plan, [Encrypted(1)], column_encryption=True)
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: parameter 1 is marked engine.Encrypted, but ...
    """
    if not any(isinstance(value, Encrypted) for value in parameters):
        return parameters
    if not column_encryption:
        raise _needs_column_encryption()
    encrypted = _encrypted_user_indexes(plan)
    values = []
    for index, value in enumerate(parameters):
        if isinstance(value, Encrypted):
            if index not in encrypted:
                raise _sent_in_plaintext(index)
            value = value.value
        values.append(value)
    return values


def unwrap_forced_column(
    values: list[object], index: int, *, encrypted: bool, column_encryption: bool
) -> list[object]:
    """executemany's values of the caller's ``?`` number ``index`` (0-based), as one column:
    unwrapped when the statement encrypts them (``encrypted``), else refused as by
    unwrap_forced if any is marked. One C-level pass over the column when none is.

    >>> unwrap_forced_column([1, Encrypted(2)], 0, encrypted=True, column_encryption=True)
    [1, 2]
    """
    if Encrypted not in set(map(type, values)):
        return values
    if not column_encryption:
        raise _needs_column_encryption()
    if not encrypted:
        raise _sent_in_plaintext(index)
    return [value.value if type(value) is Encrypted else value for value in values]

"""Per-query authorizations named by CEK: which operations the client lets the enclave run.

A `Grant` says "in this query, the enclave may run this operator over this CEK's cells of this
type with exactly this constant blob"; the session turns grants into package entries. The helpers
build the constant blob with `enclave_package`, so the host calls with the same bytes that were
hashed. It must not encrypt anything or see plaintext: comparands arrive as cells already.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.client.enclave_package import (
    MODE_RANDOMIZED,
    Operator,
    TypeCode,
    between_constant,
    compare_constant,
    encrypt_constant,
    in_constant,
    like_constant,
    reencrypt_constant,
    reencrypt_target_constant,
)
from engine.errors import ProgrammingError

__all__ = [
    "Grant",
    "compare",
    "between",
    "in_list",
    "like",
    "rank",
    "group",
    "aggregate",
    "aggregate_expression",
    "reencrypt",
    "encrypt",
]

_COMPARISONS = (Operator.EQ, Operator.NE, Operator.LT, Operator.LE, Operator.GT, Operator.GE)
_AGGREGATES = (Operator.SUM, Operator.AVG, Operator.MIN, Operator.MAX, Operator.COUNT_DISTINCT)


@dataclass(frozen=True)
class Grant:
    """One authorized operation, naming its CEK; `constant` is the blob the host must pass.

    >>> grant = rank("CEK1", TypeCode.INT64)
    >>> grant.operator.name, grant.constant
    ('RANK', b'')
    """

    cek_name: str
    operator: Operator
    type_code: TypeCode
    constant: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.cek_name, str) or not self.cek_name:
            raise ProgrammingError("a grant needs the name of its column encryption key")
        object.__setattr__(self, "operator", _operator(self.operator))
        object.__setattr__(self, "type_code", _type_code(self.type_code))
        if not isinstance(self.constant, bytes):
            raise ProgrammingError("a grant's constant must be bytes")


def _operator(value: int) -> Operator:
    try:
        return Operator(value)
    except ValueError:
        raise ProgrammingError(f"{value!r} is not an enclave operator code") from None


def _type_code(value: int) -> TypeCode:
    try:
        return TypeCode(value)
    except ValueError:
        raise ProgrammingError(f"{value!r} is not an enclave type code") from None


def compare(
    cek_name: str, type_code: TypeCode, operator: Operator, comparand: bytes | None
) -> Grant:
    """EQ, NE, LT, LE, GT or GE against one comparand cell, or column-versus-column (None).

    >>> compare("CEK1", TypeCode.UTF8, Operator.LT, b"cell").constant
    b'cell'
    """
    if _operator(operator) not in _COMPARISONS:
        raise ProgrammingError(f"{_operator(operator).name} is not a comparison operator")
    return Grant(cek_name, operator, type_code, compare_constant(comparand))


def between(cek_name: str, type_code: TypeCode, low: bytes, high: bytes) -> Grant:
    """BETWEEN low AND high (inclusive); NOT BETWEEN is the host's NOT over the result.

    >>> len(between("CEK1", TypeCode.INT64, b"l", b"h").constant)
    10
    """
    return Grant(cek_name, Operator.BETWEEN, type_code, between_constant(low, high))


def in_list(cek_name: str, type_code: TypeCode, cells: Sequence[bytes]) -> Grant:
    """IN (cells...); the list holds no NULLs, and NOT IN is the host's NOT.

    >>> in_list("CEK1", TypeCode.INT64, [b"a"]).constant[:4]
    b'\\x01\\x00\\x00\\x00'
    """
    return Grant(cek_name, Operator.IN, type_code, in_constant(cells))


def like(cek_name: str, type_code: TypeCode, pattern: bytes, escape: str | None = None) -> Grant:
    """LIKE with the pattern's cell and an optional one-character ESCAPE.

    >>> like("CEK1", TypeCode.UTF8, b"p").constant[:4]
    b'\\x00\\x00\\x00\\x00'
    """
    if _type_code(type_code) not in (TypeCode.UTF8, TypeCode.UTF16LE):
        raise ProgrammingError("LIKE applies to UTF8 and UTF16LE columns only")
    return Grant(cek_name, Operator.LIKE, type_code, like_constant(pattern, escape))


def rank(cek_name: str, type_code: TypeCode) -> Grant:
    """RANK (ORDER BY): dense ranks of the column's values.

    >>> rank("CEK1", TypeCode.DATE).type_code.name
    'DATE'
    """
    return Grant(cek_name, Operator.RANK, type_code)


def group(cek_name: str, type_code: TypeCode) -> Grant:
    """GROUP (GROUP BY, DISTINCT, equi-JOIN): dense group ids.

    >>> group("CEK1", TypeCode.GUID).operator.name
    'GROUP'
    """
    return Grant(cek_name, Operator.GROUP, type_code)


def aggregate(cek_name: str, type_code: TypeCode, operator: Operator) -> Grant:
    """SUM, AVG, MIN, MAX or COUNT_DISTINCT; results come back as cells under the same CEK.

    >>> aggregate("CEK1", TypeCode.FLOAT64, Operator.SUM).constant
    b''
    """
    if _operator(operator) not in _AGGREGATES:
        raise ProgrammingError(f"{_operator(operator).name} is not an enclave aggregate")
    return Grant(cek_name, operator, type_code)


def aggregate_expression(
    cek_names: Sequence[str], type_code: TypeCode, operator: Operator, program: bytes
) -> tuple[Grant, ...]:
    """SUM_EXPR or AVG_EXPR of one expression program: one grant per key the program reads
    (the first is the result's key), each for exactly that program.

    >>> grants = aggregate_expression(["A", "B", "A"], TypeCode.DECIMAL, Operator.SUM_EXPR, b"p")
    >>> [(g.cek_name, g.operator.name, g.constant) for g in grants]
    [('A', 'SUM_EXPR', b'p'), ('B', 'SUM_EXPR', b'p')]
    """
    if _operator(operator) not in (Operator.SUM_EXPR, Operator.AVG_EXPR):
        raise ProgrammingError(f"{_operator(operator).name} is not an expression aggregate")
    if _type_code(type_code) not in (TypeCode.DECIMAL, TypeCode.FLOAT64):
        raise ProgrammingError("an expression aggregate's result is DECIMAL or FLOAT64")
    return tuple(Grant(name, operator, type_code, program) for name in dict.fromkeys(cek_names))


def reencrypt(
    source_cek_name: str,
    target_cek_name: str,
    target_cek_id: int,
    type_code: TypeCode,
    mode: int = MODE_RANDOMIZED,
    *,
    source_cek_id: int,
) -> tuple[Grant, Grant]:
    """The two grants a re-encryption needs: REENCRYPT on the source key, and REENCRYPT_TARGET
    (naming that source and mode) on the target.

    The target gets no ENCRYPT grant: that would let the host encrypt plaintexts of its choice
    under the target key, and test guesses against a deterministic column.
    `source_cek_id` and `target_cek_id` are the session's ids (`EnclaveSession.cek_id`).

    >>> source, target = reencrypt("OLD", "NEW", 2, TypeCode.UTF8, source_cek_id=1)
    >>> (source.operator.name, source.constant.hex()), (target.operator.name, target.constant.hex())
    (('REENCRYPT', '020002'), ('REENCRYPT_TARGET', '010002'))
    """
    return (
        Grant(
            source_cek_name, Operator.REENCRYPT, type_code, reencrypt_constant(target_cek_id, mode)
        ),
        Grant(
            target_cek_name,
            Operator.REENCRYPT_TARGET,
            type_code,
            reencrypt_target_constant(source_cek_id, mode),
        ),
    )


def encrypt(cek_name: str, type_code: TypeCode, mode: int | None = None) -> Grant:
    """ENCRYPT normalized plaintexts in the enclave (in-place encryption of a plaintext column).

    >>> encrypt("CEK1", TypeCode.INT64, 1).constant
    b'\\x01'
    """
    return Grant(cek_name, Operator.ENCRYPT, type_code, encrypt_constant(mode))

"""The enclave package (spec 5.6, extended) and the constant blobs of the enclave operators.

This module is the one owner of those byte formats on the Python side: the keys blob with its
counter, statement hash, CEK entries and per-query authorizations, sealed under the session key,
and the constant blob of each operator (docs/enclave.md). It must not decide which keys or
operations a query may use (that is the session and the classifier), and never log a byte.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine.errors import ProgrammingError
from engine.types import NormalizationForm

__all__ = [
    "Operator",
    "TypeCode",
    "MODE_DETERMINISTIC",
    "MODE_RANDOMIZED",
    "Authorization",
    "type_code_for",
    "statement_hash",
    "build_package",
    "compare_constant",
    "between_constant",
    "in_constant",
    "like_constant",
    "reencrypt_constant",
    "reencrypt_target_constant",
    "encrypt_constant",
    "top_k_constant",
    "expression_program",
    "PACKAGE_PREFIX_LEN",
    "KEY_ENTRY_LEN",
    "AUTHORIZATION_ENTRY_LEN",
]


class Operator(enum.IntEnum):
    """Operator codes of the enclave contract; the C header uses the same numbers."""

    EQ = 1
    NE = 2
    LT = 3
    LE = 4
    GT = 5
    GE = 6
    BETWEEN = 7
    IN = 8
    LIKE = 9
    RANK = 10
    GROUP = 11
    SUM = 12
    AVG = 13
    MIN = 14
    MAX = 15
    COUNT_DISTINCT = 16
    REENCRYPT = 17
    ENCRYPT = 18
    # SUM and AVG of an arithmetic expression (its constant: expression_program).
    SUM_EXPR = 19
    AVG_EXPR = 20
    # Authorization-only (a package entry, never a call's operator): the target key of
    # REENCRYPT, so that a rotation need not grant ENCRYPT (host-chosen plaintexts) on it.
    REENCRYPT_TARGET = 64
    # ORDER BY ... LIMIT: the first k rows of the order (its constant: top_k_constant).
    TOP_K = 24


class TypeCode(enum.IntEnum):
    """Type codes: the normalized plaintext forms of rule v1 as the enclave orders them."""

    INT64 = 1
    FLOAT32 = 2
    FLOAT64 = 3
    DECIMAL = 4
    DATE = 5
    TIME = 6
    DATETIME2 = 7
    DATETIMEOFFSET = 8
    UTF8 = 9
    UTF16LE = 10
    BYTES = 11
    GUID = 12


MODE_DETERMINISTIC = 1
MODE_RANDOMIZED = 2

# Sizes from the contract: u64 session id before the cell; 46-byte key entries as in spec 5.6;
# 36-byte authorization entries (u16 cek id, u8 operator, u8 type code, 32-byte hash).
PACKAGE_PREFIX_LEN = 8
_BLOB_HEADER_LEN = 16 + 8 + 32
KEY_ENTRY_LEN = 46
AUTHORIZATION_ENTRY_LEN = 36
CEK_LEN = 32
_U16_MAX = 0xFFFF
_U64_MAX = 2**64 - 1
_I64_MAX = 2**63 - 1

_FORM_CODES = {form: TypeCode[form.name] for form in NormalizationForm}


def type_code_for(form: NormalizationForm) -> TypeCode:
    """The enclave type code of a normalized plaintext form.

    >>> type_code_for(NormalizationForm.UTF16LE)
    <TypeCode.UTF16LE: 10>
    """
    return _FORM_CODES[form]


@dataclass(frozen=True)
class Authorization:
    """One operation the client allows in one query: this key, operator, type and constant blob.

    The package carries only SHA-256(constant); the host passes the blob itself to the operator
    call, and the enclave refuses a call whose (cek_id, operator, type_code, hash) is not listed.

    >>> Authorization(1, Operator.RANK, TypeCode.INT64).constant_hash.hex()[:8]
    'e3b0c442'
    """

    cek_id: int
    operator: int
    type_code: int
    constant: bytes = b""

    def __post_init__(self) -> None:
        _check_u16(self.cek_id, "an authorization's cek_id")
        if self.operator not in Operator.__members__.values():
            raise ProgrammingError(
                f"authorization operator {self.operator!r} is not an enclave operator code"
            )
        if self.type_code not in TypeCode.__members__.values():
            raise ProgrammingError(
                f"authorization type code {self.type_code!r} is not an enclave type code"
            )
        if not isinstance(self.constant, bytes):
            raise ProgrammingError("an authorization's constant must be bytes")

    @property
    def constant_hash(self) -> bytes:
        return hashlib.sha256(self.constant).digest()

    def entry(self) -> bytes:
        """The 36-byte package entry."""
        return (
            struct.pack("<HBB", self.cek_id, int(self.operator), int(self.type_code))
            + self.constant_hash
        )


def statement_hash(statement_text: str) -> bytes:
    """SHA-256 of the statement text as UTF-16LE, as spec 5.6 binds a package to its query.

    >>> statement_hash("SELECT 1") == hashlib.sha256("SELECT 1".encode("utf-16-le")).digest()
    True
    """
    if not isinstance(statement_text, str):
        raise ProgrammingError("the statement text must be a str")
    # surrogatepass keeps lone surrogates (legal in a Python str) hashable instead of failing.
    return hashlib.sha256(statement_text.encode("utf-16-le", "surrogatepass")).digest()


def build_package(
    *,
    session_id: int,
    session_key: bytes | bytearray,
    counter: int,
    statement_text: str,
    keys: Sequence[tuple[int, bytes | bytearray]],
    authorizations: Iterable[Authorization],
) -> bytes:
    """The enclave package: u64 LE session id || randomized cell of the keys blob.

    The cell is the AEAD cell format with the 32-byte session key as root key, made by the
    native codec. The keys blob is assembled in a bytearray that is zeroed after sealing, and the
    session key is loaded into the codec only for this one call.

    >>> package = build_package(session_id=7, session_key=bytes(32), counter=1,
    ...     statement_text="SELECT 1", keys=[(1, bytes(32))],
    ...     authorizations=[Authorization(1, Operator.RANK, TypeCode.INT64)])
    >>> package[:8] == (7).to_bytes(8, "little"), package[8]
    (True, 1)
    """
    if isinstance(session_id, bool) or not isinstance(session_id, int):
        raise ProgrammingError("session_id must be an int")
    if not 0 <= session_id <= _U64_MAX:
        raise ProgrammingError("session_id must fit in an unsigned 64-bit integer")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= _I64_MAX:
        raise ProgrammingError("the package counter must be an integer from 1 to 2**63 - 1")
    if not isinstance(session_key, bytes | bytearray) or len(session_key) != 32:
        raise ProgrammingError("the session key must be 32 bytes")
    key_list = list(keys)
    grants = list(dict.fromkeys(authorizations))
    if len(key_list) > _U16_MAX or len(grants) > _U16_MAX:
        raise ProgrammingError("a package holds at most 65535 keys and 65535 authorizations")
    seen_ids: set[int] = set()
    for cek_id, cek in key_list:
        _check_u16(cek_id, "a key's cek_id")
        if cek_id in seen_ids:
            raise ProgrammingError(f"cek_id {cek_id} appears twice in one package")
        seen_ids.add(cek_id)
        if not isinstance(cek, bytes | bytearray) or len(cek) != CEK_LEN:
            raise ProgrammingError(f"the key with cek_id {cek_id} is not 32 bytes")
    for grant in grants:
        if not isinstance(grant, Authorization):
            raise ProgrammingError("authorizations must be Authorization objects")
        if grant.cek_id not in seen_ids:
            # The enclave could never honour it: the query context holds only the package's keys.
            raise ProgrammingError(
                f"an authorization names cek_id {grant.cek_id}, whose key is not in the package"
            )

    blob = bytearray(
        _BLOB_HEADER_LEN
        + 2
        + KEY_ENTRY_LEN * len(key_list)
        + 2
        + AUTHORIZATION_ENTRY_LEN * len(grants)
    )
    try:
        blob[0:16] = os.urandom(16)
        struct.pack_into("<q", blob, 16, counter)
        blob[24:56] = statement_hash(statement_text)
        offset = _BLOB_HEADER_LEN
        struct.pack_into("<H", blob, offset, len(key_list))
        offset += 2
        for cek_id, cek in key_list:
            # database_id 0 and a zero cek_md_version: this engine has one database and
            # versions keys by name, so both fields are fixed (the layout stays spec 5.6's).
            struct.pack_into("<I8sH", blob, offset, 0, bytes(8), cek_id)
            blob[offset + 14 : offset + KEY_ENTRY_LEN] = cek
            offset += KEY_ENTRY_LEN
        struct.pack_into("<H", blob, offset, len(grants))
        offset += 2
        for grant in grants:
            blob[offset : offset + AUTHORIZATION_ENTRY_LEN] = grant.entry()
            offset += AUTHORIZATION_ENTRY_LEN
        cell = _seal(session_key, blob)
    finally:
        blob[:] = bytes(len(blob))
    return struct.pack("<Q", session_id) + cell


def _seal(session_key: bytes | bytearray, blob: bytearray) -> bytes:
    # Imported here so that building constants and hashes does not need the native module.
    from enclave.binding import CellKey, encrypt_cells

    # A one-row binary array over the bytearray itself (no copy), so wiping the bytearray
    # afterwards leaves no second plaintext copy in an Arrow buffer.
    offsets = np.array([0, len(blob)], dtype=np.int32)
    rows = pa.Array.from_buffers(pa.binary(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(blob)])
    # CellKey copies the key into native memory; the caller's bytearray stays the one to wipe.
    with CellKey(bytes(session_key)) as key:
        cells = encrypt_cells(key, rows, deterministic=False)
    cell = cells[0].as_py()
    assert isinstance(cell, bytes)
    return cell


def _check_u16(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U16_MAX:
        raise ProgrammingError(f"{what} must be an integer from 0 to 65535")


def _cell(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) == 0:
        raise ProgrammingError(f"{what} must be a non-empty ciphertext cell (bytes)")
    return bytes(value)


def _prefixed(cell: bytes) -> bytes:
    return struct.pack("<I", len(cell)) + cell


def compare_constant(comparand: bytes | None) -> bytes:
    """The constant of EQ..GE: the comparand's cell, or empty for column-versus-column.

    >>> compare_constant(None), compare_constant(b"cell")
    (b'', b'cell')
    """
    return b"" if comparand is None else _cell(comparand, "the comparand")


def between_constant(low: bytes, high: bytes) -> bytes:
    """The constant of BETWEEN: u32 LE len || low cell || u32 LE len || high cell.

    >>> between_constant(b"lo", b"high").hex()
    '020000006c6f0400000068696768'
    """
    return _prefixed(_cell(low, "the low bound")) + _prefixed(_cell(high, "the high bound"))


def in_constant(cells: Sequence[bytes]) -> bytes:
    """The constant of IN: u32 LE count || count x (u32 LE len || cell). No NULLs in the list.

    >>> in_constant([b"a", b"bc"]).hex()
    '020000000100000061020000006263'
    """
    items = [_cell(cell, "every IN list item") for cell in cells]
    if not items:
        raise ProgrammingError("an IN list needs at least one value")
    return struct.pack("<I", len(items)) + b"".join(_prefixed(item) for item in items)


def like_constant(pattern: bytes, escape: str | None = None) -> bytes:
    """The constant of LIKE: u32 LE escape code point (0 = none) || the pattern's cell.

    >>> like_constant(b"cell", "!").hex()
    '2100000063656c6c'
    """
    if escape is None:
        code_point = 0
    elif isinstance(escape, str) and len(escape) == 1 and escape != "\0":
        code_point = ord(escape)
    else:
        raise ProgrammingError("the LIKE escape must be one character (not NUL), or None")
    return struct.pack("<I", code_point) + _cell(pattern, "the LIKE pattern")


def reencrypt_constant(target_cek_id: int, mode: int) -> bytes:
    """The constant of REENCRYPT: u16 LE target cek_id || u8 mode (1 deterministic, 2 random).

    The target key must also be authorized by its own REENCRYPT_TARGET entry, with the same type
    code and `reencrypt_target_constant(source cek_id, mode)`
    (`engine.client.enclave_authorization.reencrypt`).

    >>> reencrypt_constant(3, MODE_RANDOMIZED).hex()
    '030002'
    """
    _check_u16(target_cek_id, "the target cek_id")
    return struct.pack("<HB", target_cek_id, _mode(mode))


def reencrypt_target_constant(source_cek_id: int, mode: int) -> bytes:
    """The constant of the target key's REENCRYPT_TARGET entry: u16 LE source cek_id || u8 mode.

    It names the source key and mode, so the entry lets exactly that re-encryption write under
    the target key, and nothing else (no ENCRYPT of host-chosen plaintexts).

    >>> reencrypt_target_constant(1, MODE_DETERMINISTIC).hex()
    '010001'
    """
    _check_u16(source_cek_id, "the source cek_id")
    return struct.pack("<HB", source_cek_id, _mode(mode))


def top_k_constant(k: int, *, descending: bool, nulls_first: bool) -> bytes:
    """The constant of TOP_K: u64 LE k || u8 descending || u8 nulls first.

    k counts every row the answer may need (LIMIT plus OFFSET); a k beyond 2**64 - 1 is
    clamped, which selects every row just the same.

    >>> top_k_constant(3, descending=True, nulls_first=False).hex()
    '03000000000000000100'
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ProgrammingError("the row count of ORDER BY ... LIMIT must be a non-negative integer")
    return struct.pack("<QBB", min(k, _U64_MAX), int(bool(descending)), int(bool(nulls_first)))


_PROGRAM_VERSION = 1
_SOURCE_ENCRYPTED = 1
_SOURCE_PLAIN = 2
_EXPRESSION_CODES = {"slot": 1, "exact": 2, "float": 3, "add": 4, "sub": 5, "mul": 6, "neg": 7}


def expression_program(
    slots: Sequence[tuple[int | None, TypeCode, int]], code: Sequence[tuple[object, ...]]
) -> bytes:
    """The constant of SUM_EXPR and AVG_EXPR (docs/enclave.md): version 1, the slots as
    (cek_id or None for a plaintext column, type code, scale), then the postfix code, whose
    steps are ("slot", i), ("exact", scale, unscaled int), ("float", value), ("add",),
    ("sub",), ("mul",) and ("neg",).

    >>> # version 1, one slot (encrypted, cek 3, DECIMAL, scale 2), 2 code bytes: slot 0
    >>> expression_program([(3, TypeCode.DECIMAL, 2)], [("slot", 0)]).hex()
    '0101010300040202000100'
    """
    if not 1 <= len(slots) <= 16:
        raise ProgrammingError("an expression program has 1 to 16 slots")
    out = bytearray([_PROGRAM_VERSION, len(slots)])
    for cek_id, type_code, scale in slots:
        if cek_id is not None:
            _check_u16(cek_id, "a slot's cek_id")
        source = _SOURCE_PLAIN if cek_id is None else _SOURCE_ENCRYPTED
        out += struct.pack("<BHBB", source, cek_id or 0, int(type_code), scale)
    body = bytearray()
    for step in code:
        name = str(step[0])
        body.append(_EXPRESSION_CODES[name])
        if name == "slot":
            body.append(int(step[1]))  # type: ignore[call-overload]
        elif name == "exact":
            scale, unscaled = int(step[1]), int(step[2])  # type: ignore[call-overload]
            magnitude = abs(unscaled)
            body += bytes([scale, 1 if unscaled >= 0 else 0]) + magnitude.to_bytes(16, "little")
        elif name == "float":
            body += struct.pack("<d", float(step[1]))  # type: ignore[arg-type]
    if not 1 <= len(body) <= 256:
        raise ProgrammingError("an expression program's code must be 1 to 256 bytes")
    return bytes(out + struct.pack("<H", len(body)) + body)


def encrypt_constant(mode: int | None = None) -> bytes:
    """The constant of ENCRYPT: empty, or u8 mode (1 deterministic, 2 randomized).

    >>> encrypt_constant(), encrypt_constant(MODE_DETERMINISTIC)
    (b'', b'\\x01')
    """
    return b"" if mode is None else bytes([_mode(mode)])


def _mode(mode: int) -> int:
    if mode not in (MODE_DETERMINISTIC, MODE_RANDOMIZED):
        raise ProgrammingError("the encryption mode must be 1 (deterministic) or 2 (randomized)")
    return int(mode)

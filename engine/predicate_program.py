"""The predicate program of one ``__ee_filter_<k>`` call: every predicate's codes in one blob.

The client packs, for each predicate of the call in order, its CEK id, type code, operator and
constant; the host passes the blob by reference (one UBIGINT argument), and the filter (the
native extension or the Python UDF) unpacks it once per vector. One argument instead of four
per predicate matters because DuckDB materializes every constant argument into each vector.

Layout, little-endian, per predicate: u16 cek id, u8 type code, u8 operator, u32 constant
length, then the constant's bytes; nothing after the last predicate. The enclave still checks
each predicate against the query's authorizations, so the blob carries no authority. This module
must not encrypt, hold keys or see plaintext: constants are ciphertext the client made.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from engine.errors import InternalError

__all__ = ["MALFORMED_PROGRAM", "Predicate", "pack_predicates", "unpack_predicates"]

# (cek id, type code, operator, constant)
Predicate = tuple[int, int, int, bytes]

_HEADER = struct.Struct("<HBBI")
# What either filter (this module or the native extension) says of a program it cannot read.
MALFORMED_PROGRAM = (
    "a filter's predicate program is malformed: the host bound bytes that do not hold exactly "
    "the call's predicates as the client packs them; run the statement again"
)


def pack_predicates(predicates: Sequence[Predicate]) -> bytes:
    """The blob of ``predicates``, in order.

    >>> pack_predicates([(3, 5, 7, b"ab")]).hex(" ")
    '03 00 05 07 02 00 00 00 61 62'
    """
    parts = []
    for cek_id, type_code, operator, constant in predicates:
        try:
            parts.append(_HEADER.pack(cek_id, type_code, operator, len(constant)))
        except struct.error:
            raise InternalError(
                f"an enclave predicate's codes do not fit the filter program "
                f"(key id {cek_id}, type {type_code}, operator {operator})"
            ) from None
        parts.append(bytes(constant))
    return b"".join(parts)


def unpack_predicates(blob: bytes, count: int) -> list[Predicate]:
    """The ``count`` predicates of ``blob``; InternalError when it holds anything else.

    >>> unpack_predicates(pack_predicates([(1, 2, 3, b""), (4, 5, 6, b"xyz")]), 2)
    [(1, 2, 3, b''), (4, 5, 6, b'xyz')]
    >>> unpack_predicates(b"\\x01", 1)
    Traceback (most recent call last):
    ...
    engine.errors.InternalError: a filter's predicate program is malformed: ...
    """
    predicates: list[Predicate] = []
    at = 0
    view = memoryview(blob)
    for _ in range(count):
        if at + _HEADER.size > len(view):
            break
        cek_id, type_code, operator, length = _HEADER.unpack_from(view, at)
        at += _HEADER.size
        if at + length > len(view):
            break
        predicates.append((cek_id, type_code, operator, bytes(view[at : at + length])))
        at += length
    if len(predicates) != count or at != len(view):
        raise InternalError(MALFORMED_PROGRAM)
    return predicates

"""Fuzz target: section 5 of enclave.h through enclave.binding: begin_query with raw, sealed-fuzzed
or flipped packages, and every operator with fuzzed grants, type codes, constants and cells.

One session per process (the harness client of tests/support/enclave_harness.py). Only
`engine.Error` may escape. It must end every query context it begins.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
from collections.abc import Iterable

import atheris
import pyarrow as pa

import engine
from enclave import binding
from engine.client.codec import encrypt_column
from engine.client.enclave_package import (
    between_constant,
    compare_constant,
    in_constant,
    like_constant,
    reencrypt_constant,
    reencrypt_target_constant,
    top_k_constant,
)
from tests.support.enclave_harness import Client, seal, statement_hash

CEK = bytes(range(32))
OTHER_CEK = bytes(range(40, 72))
CEK_ID, OTHER_CEK_ID = 1, 2
STATEMENT = "SELECT * FROM t WHERE x < ?"

_directory = tempfile.mkdtemp(prefix="enclavesql-fuzz-enclave-")
atexit.register(shutil.rmtree, _directory, True)
SESSION = Client(_directory)
INT_CELLS: list[bytes] = [
    c for c in encrypt_column([1, -5, 2**40, 0], CEK, "RANDOMIZED", "BIGINT").to_pylist() if c
]
TEXT_CELLS: list[bytes] = [
    c for c in encrypt_column(["ab", "a%", "", "zz"], CEK, "RANDOMIZED", "VARCHAR").to_pylist() if c
]
CELLS = INT_CELLS + TEXT_CELLS
TYPE_CODES = (binding.TYPE_INT64, binding.TYPE_UTF8, binding.TYPE_BYTES, 0, 99)
OPERATORS = (*range(0, 20), binding.OP_TOP_K)

# The first byte picks the input kind.
RAW_PACKAGE, SEALED_BLOB, FLIPPED_PACKAGE, OPERATOR_CALL = range(4)


def seeds() -> Iterable[bytes]:
    yield bytes([RAW_PACKAGE]) + bytes(40)
    yield bytes([SEALED_BLOB]) + bytes(60)
    yield bytes([FLIPPED_PACKAGE]) + struct.pack("<HB", 20, 1)
    for operator in range(1, 19):
        yield bytes([OPERATOR_CALL, operator]) + bytes(range(operator, operator + 40))


def _cell(provider: atheris.FuzzedDataProvider) -> bytes | None:
    choice = provider.ConsumeIntInRange(0, 5)
    if choice == 0:
        return None
    base = CELLS[provider.ConsumeIntInRange(0, len(CELLS) - 1)]
    if choice == 1 and provider.remaining_bytes():
        flipped = bytearray(base)
        flipped[provider.ConsumeIntInRange(0, len(base) - 1)] ^= provider.ConsumeIntInRange(1, 255)
        return bytes(flipped)
    if choice == 2:
        return base[: provider.ConsumeIntInRange(0, len(base))]
    if choice == 3:
        return provider.ConsumeBytes(provider.ConsumeIntInRange(0, 90))
    return base


def _constant(provider: atheris.FuzzedDataProvider, operator: int) -> bytes:
    """Mostly a well-formed constant for the operator, sometimes raw fuzz."""
    if provider.ConsumeIntInRange(0, 5) == 0:
        return provider.ConsumeBytes(provider.ConsumeIntInRange(0, 120))
    comparand = CELLS[provider.ConsumeIntInRange(0, len(CELLS) - 1)]
    if operator <= binding.OP_GE:
        return compare_constant(None if provider.ConsumeBool() else comparand)
    if operator == binding.OP_BETWEEN:
        return between_constant(comparand, CELLS[provider.ConsumeIntInRange(0, len(CELLS) - 1)])
    if operator == binding.OP_IN:
        return in_constant(CELLS[: provider.ConsumeIntInRange(1, len(CELLS))])
    if operator == binding.OP_LIKE:
        return like_constant(comparand, "!" if provider.ConsumeBool() else None)
    if operator == binding.OP_REENCRYPT:
        return reencrypt_constant(OTHER_CEK_ID, provider.ConsumeIntInRange(1, 2))
    if operator == binding.OP_TOP_K:
        k = provider.ConsumeIntInRange(0, 12) if provider.ConsumeBool() else 2**64 - 1
        return top_k_constant(
            k, descending=provider.ConsumeBool(), nulls_first=provider.ConsumeBool()
        )
    if operator == binding.OP_ENCRYPT:
        return bytes([provider.ConsumeIntInRange(1, 2)]) if provider.ConsumeBool() else b""
    return b""


def _call(
    query_id: int,
    provider: atheris.FuzzedDataProvider,
    operator: int,
    type_code: int,
    constant: bytes,
) -> None:
    cek_id = CEK_ID if provider.ConsumeIntInRange(0, 7) else provider.ConsumeIntInRange(0, 70000)
    rows = [_cell(provider) for _ in range(provider.ConsumeIntInRange(0, 9))]
    cells = pa.array(rows, pa.binary())
    if operator <= binding.OP_LIKE:
        right = None
        if provider.ConsumeIntInRange(0, 3) == 0:
            right = pa.array([_cell(provider) for _ in rows], pa.binary())
        result = binding.enclave_compare(
            query_id, cek_id, type_code, operator, constant, cells, right
        )
        assert len(result) == len(rows)
    elif operator == binding.OP_TOP_K:
        result = binding.enclave_top_k(query_id, cek_id, type_code, constant, cells)
        assert len(result) == len(rows)
    elif operator in (binding.OP_RANK, binding.OP_GROUP):
        call = binding.enclave_rank if operator == binding.OP_RANK else binding.enclave_group
        assert len(call(query_id, cek_id, type_code, cells)) == len(rows)
    elif operator <= binding.OP_COUNT_DISTINCT:
        groups = provider.ConsumeIntInRange(0, 4)
        ids = [provider.ConsumeIntInRange(-1, 4) for _ in rows]
        result = binding.enclave_aggregate(
            query_id, cek_id, type_code, operator, cells, ids, groups
        )
        assert len(result) == groups
    elif operator == binding.OP_REENCRYPT:
        assert len(binding.enclave_reencrypt(query_id, cek_id, type_code, constant, cells)) == len(
            rows
        )
    else:
        plaintexts = pa.array(
            [provider.ConsumeBytes(provider.ConsumeIntInRange(0, 20)) for _ in rows], pa.binary()
        )
        assert len(
            binding.enclave_encrypt(query_id, cek_id, type_code, constant, plaintexts)
        ) == len(rows)


def _begin(package: bytes) -> None:
    query_id = binding.begin_query(SESSION.session_id, package, statement_hash(STATEMENT))
    binding.end_query(query_id)


def test_one_input(data: bytes) -> None:
    """Run one package or one operator call; only engine.Error may escape.

    >>> test_one_input(bytes([OPERATOR_CALL, 1]) + bytes(range(40)))
    """
    if not data:
        return
    kind, provider = data[0] % 4, atheris.FuzzedDataProvider(data[1:])
    try:
        if kind == RAW_PACKAGE:
            _begin(struct.pack("<Q", SESSION.session_id) + provider.ConsumeBytes(len(data)))
        elif kind == SEALED_BLOB:
            blob = provider.ConsumeBytes(len(data))
            _begin(struct.pack("<Q", SESSION.session_id) + seal(SESSION.session_key, blob))
        elif kind == FLIPPED_PACKAGE:
            package = bytearray(SESSION.package(STATEMENT, [(CEK_ID, CEK)], [(CEK_ID, 3, 1, b"")]))
            while provider.remaining_bytes() >= 3:
                position = provider.ConsumeIntInRange(0, len(package) - 1)
                package[position] ^= provider.ConsumeIntInRange(0, 255)
            _begin(bytes(package))
        else:
            operator = OPERATORS[provider.ConsumeIntInRange(0, len(OPERATORS) - 1)]
            type_code = TYPE_CODES[provider.ConsumeIntInRange(0, len(TYPE_CODES) - 1)]
            constant = _constant(provider, operator)
            grants = []
            for _ in range(provider.ConsumeIntInRange(0, 3)):
                granted = provider.ConsumeIntInRange(1, 18)
                code = TYPE_CODES[provider.ConsumeIntInRange(0, 2)]
                grants.append((CEK_ID, granted, code, _constant(provider, granted)))
            if provider.ConsumeIntInRange(
                0, 3
            ):  # most calls are authorized, to reach the operators
                grants.append((CEK_ID, operator, type_code, constant))
            grants.append((OTHER_CEK_ID, binding.OP_ENCRYPT, binding.TYPE_INT64, b""))
            target = reencrypt_target_constant(CEK_ID, provider.ConsumeIntInRange(1, 2))
            grants.append((OTHER_CEK_ID, binding.OP_REENCRYPT_TARGET, type_code, target))
            package = SESSION.package(STATEMENT, [(CEK_ID, CEK), (OTHER_CEK_ID, OTHER_CEK)], grants)
            query_id = binding.begin_query(SESSION.session_id, package, statement_hash(STATEMENT))
            try:
                _call(query_id, provider, operator, type_code, constant)
            finally:
                binding.end_query(query_id)
    except engine.Error:
        return

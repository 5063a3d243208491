"""Fuzz target: ee_enclave_aggregate_expression (enclave.h 5b) and ee_enclave_aggregate_stage
(5d) through enclave.binding, with fuzzed expression programs (mostly well formed, sometimes raw
or mutated bytes), slots of cells, tampered cells and plaintexts, group ids and grants.

One session per process (the harness client of tests/support/enclave_harness.py). Only
`engine.Error` may escape. It must end every query context it begins.
"""

from __future__ import annotations

import atexit
import contextlib
import decimal
import shutil
import tempfile
from collections.abc import Iterable

import atheris
import pyarrow as pa

import engine
from enclave import binding
from engine.client.codec import encrypt_column
from engine.client.enclave_package import TypeCode, expression_program
from tests.support.enclave_harness import Client, statement_hash

CEK = bytes(range(32))
OTHER_CEK = bytes(range(40, 72))
CEK_ID, OTHER_CEK_ID = 1, 2
STATEMENT = "SELECT SUM(x * (1 - y)) FROM t"

_directory = tempfile.mkdtemp(prefix="enclavesql-fuzz-expression-")
atexit.register(shutil.rmtree, _directory, True)
SESSION = Client(_directory)
_DECLARED = {
    TypeCode.INT64: "BIGINT",
    TypeCode.DECIMAL: "DECIMAL(18,2)",
    TypeCode.FLOAT64: "DOUBLE",
}
_VALUES = {
    TypeCode.INT64: [1, -5, 2**40, 0],
    TypeCode.DECIMAL: [decimal.Decimal("1.25"), 0, -3],
    TypeCode.FLOAT64: [0.5, -2.0, 1e300],
}
CELLS = {
    (key_id, code): [
        c for c in encrypt_column(values, key, "RANDOMIZED", _DECLARED[code]).to_pylist() if c
    ]
    for key_id, key in ((CEK_ID, CEK), (OTHER_CEK_ID, OTHER_CEK))
    for code, values in _VALUES.items()
}
TYPES = (TypeCode.INT64, TypeCode.DECIMAL, TypeCode.FLOAT64)
STEPS = ("add", "sub", "mul", "neg")


def seeds() -> Iterable[bytes]:
    yield bytes(64)
    yield bytes(range(64))
    yield bytes([1, 2, 0, 1, 1, 0, 3, 2, 1, 0]) + bytes(40)


def _scale(provider: atheris.FuzzedDataProvider) -> int:
    """Mostly a small scale; now and then one near or past DECIMAL's 38."""
    return provider.ConsumeIntInRange(0, 40 if provider.ConsumeIntInRange(0, 7) == 0 else 4)


def _program(
    provider: atheris.FuzzedDataProvider,
) -> tuple[bytes, list[tuple[int | None, TypeCode, int]]]:
    slots: list[tuple[int | None, TypeCode, int]] = []
    for index in range(provider.ConsumeIntInRange(1, 3)):
        code = TYPES[provider.ConsumeIntInRange(0, 2)]
        key: int | None = None
        if index == 0 or provider.ConsumeBool():
            key = CEK_ID if provider.ConsumeIntInRange(0, 3) else OTHER_CEK_ID
        scale = _scale(provider) if code == TypeCode.DECIMAL else 0
        slots.append((key, code, scale))
    code_steps: list[tuple[object, ...]] = [("slot", i) for i in range(len(slots))]
    depth = len(slots)
    for _ in range(provider.ConsumeIntInRange(0, 6)):
        choice = provider.ConsumeIntInRange(0, 6)
        if choice == 0:
            code_steps.append(("exact", _scale(provider), provider.ConsumeInt(9)))
            depth += 1
        elif choice == 1:
            code_steps.append(("float", provider.ConsumeRegularFloat()))
            depth += 1
        else:
            step = STEPS[provider.ConsumeIntInRange(0, 3)]
            code_steps.append((step,))
            depth -= step != "neg"
    # Mostly close the program to one value, so that most inputs reach the evaluation.
    if provider.ConsumeIntInRange(0, 7):
        code_steps += [("add",)] * max(depth - 1, 0)
    try:
        program = expression_program(slots, code_steps)
    except (engine.Error, OverflowError, ValueError):
        program = provider.ConsumeBytes(40)
    if provider.ConsumeIntInRange(0, 4) == 0 and program:
        mutated = bytearray(program)
        mutated[provider.ConsumeIntInRange(0, len(mutated) - 1)] ^= provider.ConsumeIntInRange(
            1, 255
        )
        program = bytes(mutated)
    return program, slots


def _slot_values(
    provider: atheris.FuzzedDataProvider, slot: tuple[int | None, TypeCode, int], rows: int
) -> pa.Array:
    key, code, _ = slot
    values: list[bytes | None] = []
    for _ in range(rows):
        choice = provider.ConsumeIntInRange(0, 5)
        if choice == 0:
            values.append(None)
        elif key is None or choice == 1:
            values.append(provider.ConsumeBytes(provider.ConsumeIntInRange(0, 18)))
        else:
            pool = CELLS[(key, code)]
            cell = bytearray(pool[provider.ConsumeIntInRange(0, len(pool) - 1)])
            if choice == 2:
                cell[provider.ConsumeIntInRange(0, len(cell) - 1)] ^= 1
            values.append(bytes(cell))
    return pa.array(values, pa.binary())


def _stage_layout(
    cek_id: int, type_code: int, operator: int, program: bytes, slot_count: int
) -> bytes:
    """A stage layout of two outputs: the program over stage slots 0..n-1 in order, and SUM of
    INT64 cells under CEK_ID in slot 0."""
    expression = bytes([operator, type_code]) + cek_id.to_bytes(2, "little") + b"\x00"
    expression += len(program).to_bytes(2, "little") + program + bytes(range(slot_count))
    plain = bytes([binding.OP_SUM, binding.TYPE_INT64]) + CEK_ID.to_bytes(2, "little")
    plain += b"\x00\x00\x00\x00"
    return bytes([1, slot_count, 2]) + expression + plain


def test_one_input(data: bytes) -> None:
    """Run one expression aggregate; only engine.Error may escape.

    >>> test_one_input(bytes(range(64)))
    """
    provider = atheris.FuzzedDataProvider(data)
    try:
        program, slots = _program(provider)
        operator = binding.OP_SUM_EXPR if provider.ConsumeBool() else binding.OP_AVG_EXPR
        type_code = binding.TYPE_DECIMAL if provider.ConsumeBool() else binding.TYPE_FLOAT64
        grants = []
        for key in {CEK_ID, OTHER_CEK_ID}:
            if provider.ConsumeIntInRange(0, 5):  # most calls are authorized
                grants.append((key, operator, type_code, program))
        grants.append((CEK_ID, binding.OP_SUM, binding.TYPE_INT64, b""))
        rows = provider.ConsumeIntInRange(0, 6)
        columns = [_slot_values(provider, slot, rows) for slot in slots]
        groups = provider.ConsumeIntInRange(0, 3)
        ids = [provider.ConsumeIntInRange(-1, 3) for _ in range(rows)]
        keys = [(CEK_ID, CEK), (OTHER_CEK_ID, OTHER_CEK)]
        package = SESSION.package(STATEMENT, keys, grants)
        query_id = binding.begin_query(SESSION.session_id, package, statement_hash(STATEMENT))
        try:
            cek_id = CEK_ID if provider.ConsumeIntInRange(0, 5) else OTHER_CEK_ID
            with contextlib.suppress(engine.Error):
                # The same program through the stage call (enclave.h 5d), beside a plain SUM
                # over its first slot (granted above; refused when the readers disagree).
                layout = _stage_layout(cek_id, type_code, operator, program, len(slots))
                outputs = binding.enclave_aggregate_stage(query_id, layout, columns, ids, groups, 2)
                assert [len(output) for output in outputs] == [groups, groups]
            result = binding.enclave_aggregate_expression(
                query_id, cek_id, type_code, operator, program, columns, ids, groups
            )
            assert len(result) == groups
        finally:
            binding.end_query(query_id)
    except engine.Error:
        return

"""ee_enclave_compare_and_views, the entry point the native DuckDB predicates call, through cffi.

Cells are passed as 16-byte string views (DuckDB's string_t layout: u32 length, 4-byte prefix,
pointer), each cell in a buffer of its own. The answers must equal enclave_filter's (the Arrow
entry point) and SQL's AND over the plaintext; malformed views are EE_ERR_ARGUMENT and a tampered
or truncated cell EE_ERR_AUTH, as on the Arrow path.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from enclave import binding
from engine.client.codec import encrypt_column
from engine.errors import OperationalError
from tests.support.enclave_harness import Client

CEK = bytes(range(32))
STATEMENT = "SELECT * FROM t WHERE x = ?"
EE_OK, EE_ERR_AUTH, EE_ERR_ARGUMENT = 0, 1, 2
TRUE, FALSE, NULL = 1, 0, 2
_ffi, _lib = binding._ffi, binding._lib


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    platform = tmp_path / "platform"
    platform.mkdir()
    session = Client(platform)
    yield session
    try:
        session.close()
    except OperationalError:
        pass


class Views:
    """Cells as string views; keeps each cell's buffer alive while the views are in use."""

    def __init__(self, cells: list[bytes | None]) -> None:
        self.keep: list[Any] = []
        self.count = len(cells)
        self.validity = bytearray((self.count + 7) // 8)
        raw = bytearray()
        for row, cell in enumerate(cells):
            if cell is None:
                raw += bytes(16)
                continue
            self.validity[row // 8] |= 1 << (row % 8)
            raw += self.view(cell)
        self.raw = raw

    def view(self, cell: bytes, length: int | None = None, null_pointer: bool = False) -> bytes:
        length = len(cell) if length is None else length
        if length <= 12:
            return struct.pack("<I", length) + cell[:length].ljust(12, b"\0")
        buffer = _ffi.new("uint8_t[]", cell)
        self.keep.append(buffer)
        address = 0 if null_pointer else int(_ffi.cast("uintptr_t", buffer))
        return struct.pack("<I4sQ", length, cell[:4], address)

    def set(self, row: int, view: bytes) -> None:
        self.raw[16 * row : 16 * row + 16] = view

    def call(
        self,
        query: int,
        type_code: int,
        op: int,
        constant: bytes,
        state: bytearray,
        views_len: int | None = None,
    ) -> int:
        views_len = 16 * self.count if views_len is None else views_len
        return int(
            _lib.ee_enclave_compare_and_views(
                _ffi.from_buffer("uint8_t[]", state, require_writable=True),
                len(state),
                query,
                1,
                type_code,
                op,
                constant,
                len(constant),
                _ffi.from_buffer("uint8_t[]", self.raw),
                views_len,
                _ffi.from_buffer("uint8_t[]", self.validity),
                len(self.validity),
                0,
                self.count,
                _ffi.NULL,
                0,
                _ffi.NULL,
                0,
                0,
                0,
            )
        )


def _and(state: int, value: int | None, hit: bool) -> int:
    if state == FALSE:
        return FALSE
    if value is None:
        return NULL
    return state if hit else FALSE


@pytest.mark.parametrize("sql_type", ["BIGINT", "DATE"])
def test_views_agree_with_the_arrow_entry_point_and_plaintext(
    client: Client, sql_type: str
) -> None:
    import datetime

    rng = random.Random(5)
    numbers = [None if rng.random() < 0.1 else rng.randint(-30, 30) for _ in range(2500)]
    base = datetime.date(2000, 1, 1)

    def value(n: int) -> Any:
        return n if sql_type == "BIGINT" else base + datetime.timedelta(days=n)

    type_code = binding.TYPE_INT64 if sql_type == "BIGINT" else binding.TYPE_DATE
    plain = [None if n is None else value(n) for n in numbers]
    cells = encrypt_column(plain, CEK, "RANDOMIZED", sql_type).to_pylist()
    comparand = encrypt_column([value(4)], CEK, "RANDOMIZED", sql_type)[0].as_py()
    grants = [(1, op, type_code, comparand) for op, _ in _OPS]
    query = client.begin(STATEMENT, [(1, CEK)], grants)
    views = Views(cells)
    try:
        for op, holds in _OPS:
            start = bytes(rng.choice([TRUE, FALSE, NULL]) for _ in numbers)
            state = bytearray(start)
            assert views.call(query, type_code, op, comparand, state) == EE_OK
            want = [
                _and(s, n, n is not None and holds(n, 4))
                for s, n in zip(start, numbers, strict=True)
            ]
            assert list(state) == want
            arrow = binding.enclave_filter(
                query, [(1, type_code, op, comparand)], [pa.array(cells, pa.binary())]
            ).to_pylist()
            from_true = bytearray(bytes([TRUE]) * len(numbers))
            assert views.call(query, type_code, op, comparand, from_true) == EE_OK
            assert [{TRUE: True, FALSE: False, NULL: None}[b] for b in from_true] == arrow
    finally:
        binding.end_query(query)


_OPS = [
    (binding.OP_EQ, lambda a, b: a == b),
    (binding.OP_NE, lambda a, b: a != b),
    (binding.OP_LT, lambda a, b: a < b),
    (binding.OP_LE, lambda a, b: a <= b),
    (binding.OP_GT, lambda a, b: a > b),
    (binding.OP_GE, lambda a, b: a >= b),
]


def test_malformed_views_are_refused_and_skipped_rows_never_read(client: Client) -> None:
    cells = encrypt_column([7, 1, 9, 5], CEK, "RANDOMIZED", "BIGINT").to_pylist()
    five = encrypt_column([5], CEK, "RANDOMIZED", "BIGINT")[0].as_py()
    query = client.begin(STATEMENT, [(1, CEK)], [(1, binding.OP_GE, binding.TYPE_INT64, five)])
    views = Views(cells)
    good = [TRUE, FALSE, TRUE, TRUE]

    def run(**kwargs: Any) -> tuple[int, list[int]]:
        state = bytearray([TRUE] * 4)
        status = views.call(query, binding.TYPE_INT64, binding.OP_GE, five, state, **kwargs)
        return status, list(state)

    try:
        assert run() == (EE_OK, good)
        assert run(views_len=63)[0] == EE_ERR_ARGUMENT
        assert run(views_len=80)[0] == EE_ERR_ARGUMENT
        # A NULL pointer with a nonzero length: refused, and the state is zeroed ...
        views.set(2, views.view(cells[2], null_pointer=True))
        assert run() == (EE_ERR_ARGUMENT, [FALSE] * 4)
        # ... unless the row is already FALSE, whose view is never read.
        state = bytearray([TRUE, TRUE, FALSE, TRUE])
        assert views.call(query, binding.TYPE_INT64, binding.OP_GE, five, state) == EE_OK
        assert list(state) == [TRUE, FALSE, FALSE, TRUE]
        views.set(2, views.view(cells[2]))
        # Truncated, inline-short and tampered cells fail authentication.
        views.set(3, views.view(cells[3], length=len(cells[3]) - 1))
        assert run()[0] == EE_ERR_AUTH
        views.set(3, views.view(cells[3], length=12))
        assert run()[0] == EE_ERR_AUTH
        tampered = bytearray(cells[3])
        tampered[60] ^= 1
        views.set(3, views.view(bytes(tampered)))
        assert run()[0] == EE_ERR_AUTH
        # Lengths past INT32_MAX are refused before anything is read.
        views.set(3, views.view(cells[3], length=2**31))
        assert run()[0] == EE_ERR_ARGUMENT
        views.set(3, views.view(cells[3]))
        assert run() == (EE_OK, good)
    finally:
        binding.end_query(query)


def test_compare_and_entry_hands_over_the_views_entry_point() -> None:
    version, address = binding.compare_and_entry()
    assert version == binding.EXPECTED_ABI_VERSION
    entry = _ffi.addressof(_lib, "ee_enclave_compare_and_views")
    assert address == int(_ffi.cast("uintptr_t", entry))

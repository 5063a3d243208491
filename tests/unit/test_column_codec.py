"""engine.client.codec: encrypt_column / decrypt_column over the native codec, for every type."""

from __future__ import annotations

import datetime as dt
import doctest
import math
import os
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

binding = pytest.importorskip(
    "enclave.binding", reason="the native codec (enclave.binding) is not built"
)

import engine.client.codec  # noqa: E402 - only once the binding is known to exist
from engine.client.codec import decrypt_column, encrypt_column  # noqa: E402
from engine.client.normalization import normalize  # noqa: E402
from engine.errors import CellAuthenticationError, DataError, ProgrammingError  # noqa: E402

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "BOOLEAN": st.booleans(),
    "TINYINT": st.integers(-128, 127),
    "BIGINT": st.integers(-(2**63), 2**63 - 1),
    "UINTEGER": st.integers(0, 2**32 - 1),
    "REAL": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "DOUBLE": st.floats(allow_nan=False),
    "DECIMAL(20,5)": st.integers(-(10**20) + 1, 10**20 - 1).map(lambda u: Decimal(f"{u}E-5")),
    "DATE": st.dates(),
    "TIME": st.times(),
    "TIMESTAMP": st.datetimes(),
    "TIMESTAMPTZ": st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.just(dt.UTC),
    ),
    "VARCHAR": st.text(),
    "NVARCHAR": st.text(),
    "BLOB": st.binary(),
    "UUID": st.uuids(),
}


@pytest.mark.parametrize("declared", sorted(VALUES))
@settings(max_examples=25, deadline=None)
@given(data=st.data(), deterministic=st.booleans())
def test_round_trip(declared: str, data: st.DataObject, deterministic: bool) -> None:
    values = data.draw(st.lists(st.none() | VALUES[declared], max_size=10))
    kind = "DETERMINISTIC" if deterministic else "RANDOMIZED"
    cells = encrypt_column(values, KEY, kind, declared, column="t.c")
    assert cells.type == pa.binary()
    assert [cell is None for cell in cells.to_pylist()] == [value is None for value in values]
    assert decrypt_column(cells, KEY, declared, column="t.c").to_pylist() == values


# Small domains, so that equal and unequal pairs both occur often.
SMALL: dict[str, st.SearchStrategy[Any]] = {
    "INTEGER": st.integers(-2, 2),
    "DOUBLE": st.sampled_from([0.0, -0.0, 1.5, math.nan]),
    "VARCHAR": st.sampled_from(["", "a", "A", "é"]),
    "NVARCHAR": st.sampled_from(["", "a", "\U0001f600"]),
    "DECIMAL(5,2)": st.sampled_from([Decimal("1.5"), Decimal("1.50"), Decimal("-1.5"), Decimal(0)]),
}


@pytest.mark.parametrize("declared", sorted(SMALL))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_deterministic_cells_equal_iff_normalized_equal(declared: str, data: st.DataObject) -> None:
    left = data.draw(st.lists(SMALL[declared], min_size=1, max_size=6))
    right = data.draw(st.lists(SMALL[declared], min_size=len(left), max_size=len(left)))
    left_cells = encrypt_column(left, KEY, "deterministic", declared).to_pylist()
    right_cells = encrypt_column(right, KEY, "Deterministic", declared).to_pylist()
    left_plain = normalize(left, declared).to_pylist()
    right_plain = normalize(right, declared).to_pylist()
    for index in range(len(left)):
        same_cell = left_cells[index] == right_cells[index]
        assert same_cell == (left_plain[index] == right_plain[index])


def test_randomized_cells_differ_per_call_and_from_deterministic() -> None:
    values = [7, 7, 7]
    first = encrypt_column(values, KEY, "RANDOMIZED", "INTEGER").to_pylist()
    second = encrypt_column(values, KEY, "randomized", "INTEGER").to_pylist()
    fixed = encrypt_column(values, KEY, "DETERMINISTIC", "INTEGER").to_pylist()
    assert len(set(first) | set(second)) == 6
    assert len(set(fixed)) == 1 and fixed[0] not in first + second


def test_wrong_key_raises_cell_authentication_error() -> None:
    cells = encrypt_column(["secret"], KEY, "RANDOMIZED", "VARCHAR")
    with pytest.raises(CellAuthenticationError) as raised:
        decrypt_column(cells, OTHER_KEY, "VARCHAR", column="t.c")
    assert str(raised.value) == CellAuthenticationError.MESSAGE


@pytest.mark.parametrize("position", [0, 1, 40, 64, -1])
def test_tampered_cell_raises_cell_authentication_error(position: int) -> None:
    cell = bytearray(encrypt_column([12345], KEY, "DETERMINISTIC", "BIGINT")[0].as_py())
    cell[position] ^= 0x01
    with pytest.raises(CellAuthenticationError):
        decrypt_column([bytes(cell)], KEY, "BIGINT")


def test_truncated_cell_raises_cell_authentication_error() -> None:
    cell = encrypt_column([1], KEY, "RANDOMIZED", "INTEGER")[0].as_py()
    with pytest.raises(CellAuthenticationError):
        decrypt_column([cell[:-16]], KEY, "INTEGER")


@pytest.mark.parametrize("kind", ["", "DET", "RANDOM", "PLAINTEXT", None, 1])
def test_bad_encryption_type_raises_programming_error(kind: Any) -> None:
    with pytest.raises(ProgrammingError):
        encrypt_column([1], KEY, kind, "INTEGER")


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "k" * 32])
def test_bad_key_raises_programming_error(key: Any) -> None:
    with pytest.raises(ProgrammingError):
        encrypt_column([1], key, "RANDOMIZED", "INTEGER")


def test_cells_of_another_type_raise_data_error_after_authenticating() -> None:
    cells = encrypt_column([1], KEY, "RANDOMIZED", "INTEGER")
    with pytest.raises(DataError) as raised:
        decrypt_column(cells, KEY, "DATE", column="t.when")
    assert "t.when" in str(raised.value)


def test_chunked_and_list_inputs() -> None:
    cells = encrypt_column(pa.chunked_array([[1, None], [3]]), KEY, "RANDOMIZED", "INTEGER")
    chunked = pa.chunked_array([cells.slice(0, 1), cells.slice(1)])
    assert decrypt_column(chunked, KEY, "INTEGER").to_pylist() == [1, None, 3]
    assert decrypt_column(cells.to_pylist(), KEY, "INTEGER").to_pylist() == [1, None, 3]
    with pytest.raises(DataError):
        decrypt_column(pa.array([1, 2]), KEY, "INTEGER", column="t.c")


def test_native_key_is_closed_on_success_and_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []
    real = binding.CellKey

    class RecordingKey(real):  # type: ignore[misc, valid-type]
        def __init__(self, root_key: bytes) -> None:
            super().__init__(root_key)
            self.recorded_close = False
            opened.append(self)

        def close(self) -> None:
            self.recorded_close = True
            super().close()

    monkeypatch.setattr(binding, "CellKey", RecordingKey)
    cells = encrypt_column([1], KEY, "RANDOMIZED", "INTEGER")
    decrypt_column(cells, KEY, "INTEGER")
    with pytest.raises(CellAuthenticationError):
        decrypt_column(cells, OTHER_KEY, "INTEGER")
    assert len(opened) == 3 and all(key.recorded_close for key in opened)


def test_module_doctests_pass() -> None:
    result = doctest.testmod(engine.client.codec, extraglobs={"os": os})
    assert result.attempted > 0 and result.failed == 0

"""engine.client.normalization: rule v1 round trips, byte forms and every DataError path.

The expected bytes come from a per-value reference encoder written here with struct, int.to_bytes
and uuid.bytes_le, independent of the vectorized numpy code under test.
"""

from __future__ import annotations

import datetime as dt
import decimal
import doctest
import math
import struct
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.client.normalization
from engine.client.normalization import denormalize, normalize
from engine.errors import DataError, NotSupportedError
from engine.types import SqlType, parse_sql_type

DAY_ONE = dt.date(1, 1, 1)
UTC = dt.UTC


def _ticks(value: dt.time | dt.datetime) -> int:
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return (micros + value.microsecond) * 10


def reference(value: Any, sql_type: SqlType) -> bytes:
    """Spec section 3, one value at a time."""
    name = sql_type.name
    if name == "BOOLEAN":
        return struct.pack("<q", int(value))
    if sql_type.category.value == "integer":
        return struct.pack("<q", value)
    if name == "REAL":
        return struct.pack("<f", value + 0.0)
    if name == "DOUBLE":
        return struct.pack("<d", math.nan if math.isnan(value) else value + 0.0)
    if name == "DECIMAL":
        with decimal.localcontext(decimal.Context(prec=100)):
            units = int(value.scaleb(sql_type.scale))
        return bytes([0 if units < 0 else 1]) + abs(units).to_bytes(16, "little")
    if name == "DATE":
        return (value - DAY_ONE).days.to_bytes(3, "little")
    step = 10 ** (7 - sql_type.scale) if sql_type.scale is not None else 1
    if name == "TIME":
        return (_ticks(value) // step * step).to_bytes(5, "little")
    if name in ("TIMESTAMP", "TIMESTAMPTZ"):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        time_part = (_ticks(value) // step * step).to_bytes(5, "little")
        date_part = (value.date() - DAY_ONE).days.to_bytes(3, "little")
        return time_part + date_part + (b"\x00\x00" if name == "TIMESTAMPTZ" else b"")
    if name == "VARCHAR":
        return value.encode("utf-8")
    if name == "NVARCHAR":
        return value.encode("utf-16-le")
    if name == "BLOB":
        return bytes(value)
    assert name == "UUID"
    return value.bytes_le  # .NET Guid.ToByteArray() order


def _decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    limit = 10**precision - 1
    # From text, so the default 28-digit context cannot round a 38-digit value.
    return st.integers(-limit, limit).map(lambda units: Decimal(f"{units}E-{scale}"))


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "BOOLEAN": st.booleans(),
    "TINYINT": st.integers(-(2**7), 2**7 - 1),
    "SMALLINT": st.integers(-(2**15), 2**15 - 1),
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "BIGINT": st.integers(-(2**63), 2**63 - 1),
    "UTINYINT": st.integers(0, 2**8 - 1),
    "USMALLINT": st.integers(0, 2**16 - 1),
    "UINTEGER": st.integers(0, 2**32 - 1),
    "UBIGINT": st.integers(0, 2**63 - 1),
    "REAL": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "DOUBLE": st.floats(),
    "DECIMAL(38,0)": _decimals(38, 0),
    "DECIMAL(38,38)": _decimals(38, 38),
    "DECIMAL(18,3)": _decimals(18, 3),
    "DECIMAL(10,4)": _decimals(10, 4),
    "DECIMAL(1,0)": _decimals(1, 0),
    "DATE": st.dates(),
    "TIME": st.times(),
    "TIMESTAMP": st.datetimes(),
    "TIMESTAMPTZ": st.datetimes(
        min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    "VARCHAR": st.text(),
    "NVARCHAR(40)": st.text(),
    "BLOB": st.binary(),
    "UUID": st.uuids(),
}


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right) and type(left) is type(right)


@pytest.mark.parametrize("declared", sorted(STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_and_bytes_match_the_reference(declared: str, data: st.DataObject) -> None:
    sql_type = parse_sql_type(declared)
    values = data.draw(st.lists(st.none() | STRATEGIES[declared], max_size=20))
    cells = normalize(values, sql_type, column="c")
    assert cells.type == pa.binary()
    expected = [None if value is None else reference(value, sql_type) for value in values]
    assert cells.to_pylist() == expected
    back = denormalize(cells, sql_type, column="c")
    assert back.type == sql_type.arrow_type
    assert len(back) == len(values)
    for got, value in zip(back.to_pylist(), values, strict=True):
        if value is None:
            assert got is None
        elif sql_type.name == "REAL":
            assert got == value  # hypothesis draws exact 32-bit floats
        else:
            assert _same(value, got), (value, got)


@pytest.mark.parametrize("declared", sorted(STRATEGIES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_sliced_and_chunked_arrow_input_match_list_input(
    declared: str, data: st.DataObject
) -> None:
    sql_type = parse_sql_type(declared)
    values = data.draw(st.lists(st.none() | STRATEGIES[declared], min_size=1, max_size=12))
    start = data.draw(st.integers(0, len(values)))
    array = pa.array(values, type=sql_type.arrow_type)
    expected = normalize(values[start:], sql_type).to_pylist()
    assert normalize(array.slice(start), sql_type).to_pylist() == expected
    chunked = pa.chunked_array([array.slice(0, start), array.slice(start)])
    assert normalize(chunked, sql_type).to_pylist() == normalize(values, sql_type).to_pylist()
    # The cells themselves may be sliced too.
    cells = normalize(values, sql_type)
    back = denormalize(cells.slice(start), sql_type).to_pylist()
    assert all(_same(a, b) for a, b in zip(back, values[start:], strict=True))


BOUNDARIES = [
    ("BIGINT", [-(2**63), 2**63 - 1, 0]),
    ("TINYINT", [-128, 127]),
    ("UBIGINT", [0, 2**63 - 1]),
    ("DATE", [dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
    ("TIMESTAMP", [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]),
    ("TIME", [dt.time(0), dt.time(23, 59, 59, 999999)]),
    ("DECIMAL(38,0)", [Decimal(10**38 - 1), Decimal(-(10**38 - 1)), Decimal(0)]),
    ("DECIMAL(38,38)", [Decimal("0." + "9" * 38), Decimal("-0." + "9" * 38)]),
    ("DECIMAL(10,2)", [Decimal("-0.01"), Decimal("-99999999.99")]),
    ("VARCHAR", ["", "\U0001f600", "a\x00b"]),
    ("NVARCHAR", ["", "\U0001f600\U00010348", "é", "abc"]),
    ("BLOB", [b"", b"\x00\xff"]),
    ("INTEGER", [None, None]),
    ("NVARCHAR", [None, "x", None]),
    ("DECIMAL(5,2)", []),
]


@pytest.mark.parametrize(("declared", "values"), BOUNDARIES)
def test_boundaries_round_trip(declared: str, values: list[Any]) -> None:
    sql_type = parse_sql_type(declared)
    cells = normalize(values, sql_type)
    assert cells.to_pylist() == [None if v is None else reference(v, sql_type) for v in values]
    assert denormalize(cells, sql_type).to_pylist() == values


def test_negative_zero_normalizes_like_positive_zero() -> None:
    # DuckDB has -0.0 = 0.0, so deterministic cells must be equal too.
    for declared in ("REAL", "DOUBLE"):
        assert normalize([-0.0], declared).to_pylist() == normalize([0.0], declared).to_pylist()
    assert duckdb.sql("SELECT -0.0::DOUBLE = 0.0::DOUBLE").fetchall() == [(True,)]


def test_every_nan_normalizes_to_one_pattern() -> None:
    patterns = np.array([0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000123], "<u8")
    nans = pa.array(patterns.view("<f8"))
    cells = normalize(nans, "DOUBLE").to_pylist()
    assert len(set(cells)) == 1
    assert duckdb.sql("SELECT 'nan'::DOUBLE = -'nan'::DOUBLE").fetchall() == [(True,)]


def test_time_is_truncated_to_the_column_scale() -> None:
    value = dt.time(13, 14, 15, 123456)
    cells = normalize([value], "TIME(3)").to_pylist()
    assert cells == [reference(dt.time(13, 14, 15, 123000), parse_sql_type("TIME"))]
    assert denormalize(normalize([value], "TIME(0)"), "TIME(0)").to_pylist() == [
        dt.time(13, 14, 15)
    ]


def test_timestamptz_with_any_offset_is_written_as_the_utc_instant() -> None:
    local = dt.datetime(2024, 3, 15, 13, 14, 15, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    as_utc = local.astimezone(UTC)
    cells = normalize([local], "TIMESTAMPTZ")
    assert cells.to_pylist() == normalize([as_utc], "TIMESTAMPTZ").to_pylist()
    assert denormalize(cells, "TIMESTAMPTZ").to_pylist() == [as_utc]


def test_timestamptz_reads_the_stored_utc_fields_whatever_the_offset() -> None:
    # A cell written by SQL Server for 13:14:15 +05:30 stores 07:44:15 UTC and offset +330.
    utc_cell = reference(
        dt.datetime(2024, 3, 15, 7, 44, 15, tzinfo=UTC), SqlType("TIMESTAMPTZ", scale=7)
    )
    cell = utc_cell[:8] + struct.pack("<h", 330)
    got = denormalize(pa.array([cell], pa.binary()), "TIMESTAMPTZ").to_pylist()
    assert got == [dt.datetime(2024, 3, 15, 7, 44, 15, tzinfo=UTC)]


def test_decimal_rescale_rounds_like_duckdb() -> None:
    # DuckDB is the oracle for rounding to the column scale (half away from zero).
    values = [Decimal(text) for text in ("1.235", "-1.235", "2.5", "-2.5", "0.004", "-0.005")]
    source = pa.array(values, pa.decimal128(10, 3))
    source_table = pa.table({"v": source})  # noqa: F841 - read by DuckDB's replacement scan
    expected = [
        row[0] for row in duckdb.sql("SELECT CAST(v AS DECIMAL(10,2)) FROM source_table").fetchall()
    ]
    assert denormalize(normalize(source, "DECIMAL(10,2)"), "DECIMAL(10,2)").to_pylist() == expected
    assert denormalize(normalize(values, "DECIMAL(10,0)"), "DECIMAL(10,0)").to_pylist() == [
        Decimal(1),
        Decimal(-1),
        Decimal(3),
        Decimal(-3),
        Decimal(0),
        Decimal(0),
    ]


@pytest.mark.parametrize("length", [1, 9, 16, 17, 20])
def test_decimal_reads_sign_and_magnitude_of_any_length(length: int) -> None:
    # tedious writes 9 bytes, JDBC 16, SqlClient 17; all decrypt to the same value.
    units = 1234567 if length > 1 else 0
    for sign in (0, 1):
        cell = bytes([sign]) + units.to_bytes(length - 1, "little") if length > 1 else bytes([sign])
        got = denormalize(pa.array([cell], pa.binary()), "DECIMAL(10,4)").to_pylist()
        expected = Decimal(units if sign else -units).scaleb(-4)
        assert got == [expected]


def test_unicode_transcoding_keeps_row_boundaries_with_nulls_and_slices() -> None:
    values = ["ab", None, "\U0001f600", "", "é\U00010348z", None, "plain"]
    array = pa.array(values).slice(1)
    cells = normalize(array, "NVARCHAR")
    assert cells.to_pylist() == [None if v is None else v.encode("utf-16-le") for v in values[1:]]
    assert denormalize(cells, "NVARCHAR").to_pylist() == values[1:]


# --- errors ----------------------------------------------------------------------------------


NORMALIZE_ERRORS = [
    ("TINYINT", [128]),
    ("UTINYINT", [-1]),
    ("UBIGINT", [2**63]),
    ("UBIGINT", pa.array([2**64 - 1], pa.uint64())),
    ("INTEGER", ["secret-text"]),
    ("INTEGER", [1.5]),
    ("REAL", [math.nan]),
    ("REAL", [math.inf]),
    ("REAL", [1e39]),
    ("DECIMAL(4,2)", [Decimal("100.00")]),
    ("DECIMAL(4,2)", [Decimal("99.995")]),
    ("DECIMAL(4,2)", [math.nan]),
    ("DECIMAL(4,2)", pa.array([math.inf])),
    ("DECIMAL(4,2)", ["abc"]),
    ("DATE", pa.array([3_000_000], pa.int32()).cast(pa.date32())),
    ("DATE", pa.array([-800_000], pa.int32()).cast(pa.date32())),
    ("TIMESTAMP", pa.array([300_000_000_000_000_000], pa.int64()).cast(pa.timestamp("us"))),
    ("TIME", pa.array([86_400_000_000], pa.int64()).cast(pa.time64("us"))),
    ("TIME", pa.array([1], pa.int64()).cast(pa.time64("ns"))),
    ("UUID", ["not-a-uuid"]),
    ("NVARCHAR", [b"\xff"]),
    ("VARCHAR", "a string is not a sequence of values"),
]


@pytest.mark.parametrize(("declared", "values"), NORMALIZE_ERRORS)
def test_unencodable_values_raise_data_error_naming_the_column(declared: str, values: Any) -> None:
    with pytest.raises(DataError) as raised:
        normalize(values, declared, column="orders.amount")
    message = str(raised.value)
    assert "orders.amount" in message
    assert "secret-text" not in message
    assert raised.value.__cause__ is None  # Arrow's own message may quote the value


def _cells(*cells: bytes | None) -> pa.Array:
    return pa.array(list(cells), pa.binary())


DENORMALIZE_ERRORS = [
    ("INTEGER", _cells(b"\x01" * 7)),
    ("INTEGER", _cells(None, b"\x01" * 9)),
    ("TINYINT", _cells(struct.pack("<q", 300))),
    ("UTINYINT", _cells(struct.pack("<q", -1))),
    ("INTEGER", _cells(struct.pack("<q", 2**31))),
    ("UBIGINT", _cells(struct.pack("<q", -1))),
    ("BOOLEAN", _cells(struct.pack("<q", 2))),
    ("REAL", _cells(b"\x00" * 8)),
    ("DATE", _cells((3_652_059).to_bytes(3, "little"))),
    ("TIME", _cells((864_000_000_000).to_bytes(5, "little"))),
    ("TIMESTAMP", _cells(b"\x00" * 10)),
    ("TIMESTAMPTZ", _cells(b"\x00" * 8 + struct.pack("<h", 900))),
    ("UUID", _cells(b"\x00" * 15)),
    ("DECIMAL(4,2)", _cells(b"")),
    ("DECIMAL(4,2)", _cells(b"\x02" + b"\x00" * 16)),
    ("DECIMAL(4,2)", _cells(b"\x01" + (10_000).to_bytes(16, "little"))),
    ("DECIMAL(38,0)", _cells(b"\x01" + b"\x00" * 16 + b"\x01")),
    ("VARCHAR", _cells(b"\xc3")),
    ("VARCHAR", _cells(b"ok", b"\xe2\x82")),
    ("NVARCHAR", _cells(b"a\x00b")),
    ("NVARCHAR", _cells(b"\x00\xd8")),  # a lone high surrogate
    ("NVARCHAR", _cells(b"\x3d\xd8", b"\x00\xde")),  # a pair split across two cells
    ("INTEGER", pa.array([1, 2])),
]


@pytest.mark.parametrize(("declared", "cells"), DENORMALIZE_ERRORS)
def test_malformed_cells_raise_data_error_naming_the_column(declared: str, cells: Any) -> None:
    with pytest.raises(DataError) as raised:
        denormalize(cells, declared, column="orders.amount")
    assert "orders.amount" in str(raised.value)


def test_split_surrogate_pair_is_valid_when_joined() -> None:
    # The same bytes in one cell are a valid astral character, so the check above is about
    # the boundary, not the bytes.
    assert denormalize(_cells(b"\x3d\xd8\x00\xde"), "NVARCHAR").to_pylist() == ["\U0001f600"]


@pytest.mark.parametrize("declared", ["HUGEINT", "INTERVAL", "JSON", "INTEGER[]"])
def test_unsupported_types_raise_not_supported(declared: str) -> None:
    with pytest.raises(NotSupportedError):
        normalize([1], declared)
    with pytest.raises(NotSupportedError):
        denormalize(_cells(b"\x00"), declared)


def test_module_doctests_pass() -> None:
    result = doctest.testmod(engine.client.normalization)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**18), 10**18), st.integers(0, 18))
def test_a_decimal_literal_becomes_the_double_duckdb_reads(digits: int, scale: int) -> None:
    """A literal such as 390462361538.3544 arrives as a Decimal; it must give the same double
    as DuckDB's own parse of the text (Arrow's decimal-to-float cast can miss by one ulp)."""
    text = str(Decimal(digits).scaleb(-scale))
    expected = duckdb.execute(f"SELECT CAST('{text}' AS DOUBLE)").fetchone()[0]
    assert normalize([Decimal(text)], "DOUBLE").to_pylist() == [struct.pack("<d", expected)]

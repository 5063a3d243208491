"""Normalization rule v1 against the public vectors: normalized forms and typed deterministic cells.

Vectors are read from ../shared via tests.support.vectors, never copied. SQL Server type names in
the vectors map to our declared types through the small table below; SQL Server types that
EnclaveSQL does not offer for columns (money, smalldatetime, the 1/300 s datetime) are skipped.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from engine.client.normalization import denormalize, normalize
from engine.types import SqlType, parse_sql_type
from tests.support.vectors import interop_cases

UTC = dt.UTC

# SQL Server type (as the vectors spell it, lower case, qualifiers after a space dropped) ->
# our declaration. T-SQL tinyint is 0..255 (DuckDB UTINYINT); T-SQL float is 8 bytes (DOUBLE).
SQL_SERVER_TYPES = {
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "UTINYINT",
    "bigint": "BIGINT",
    "bit": "BOOLEAN",
    "real": "REAL",
    "float": "DOUBLE",
    "decimal(p,4)": "DECIMAL(18,4)",
    "date": "DATE",
    "time(7)": "TIME(7)",
    "time(3)": "TIME(3)",
    "datetime2(7)": "DATETIME2(7)",
    "datetime2(3)": "DATETIME2(3)",
    "datetimeoffset(7)": "DATETIMEOFFSET(7)",
    "datetimeoffset(3)": "DATETIMEOFFSET(3)",
    "uniqueidentifier": "UNIQUEIDENTIFIER",
    "nvarchar": "NVARCHAR",
    "nchar(10)": "NCHAR(10)",
    # char(10) Latin1_General_BIN2 is cp1252; for ASCII text it equals our UTF-8 VARCHAR.
    "char(10)": "VARCHAR(10)",
    "varbinary": "VARBINARY",
    "binary(10)": "BINARY(10)",
    "raw": "VARCHAR",  # "raw ASCII bytes": ASCII text, so UTF-8 gives the same bytes
}
NOT_OFFERED = {
    "money": "SQL Server money is not offered as a column type; declare DECIMAL(19,4)",
    "smalldatetime": "SQL Server smalldatetime is not offered as a column type",
    "datetime": (
        "SQL Server datetime (1/300 s ticks) is not offered; DATETIME here is DuckDB's alias "
        "of TIMESTAMP, normalized as datetime2(7)"
    ),
}


def declared_type(vector: dict[str, Any]) -> SqlType:
    written = vector["plaintext_type"].lower().split(" ")[0]
    if written in NOT_OFFERED:
        pytest.skip(NOT_OFFERED[written])
    return parse_sql_type(SQL_SERVER_TYPES[written])


_TEMPORAL = re.compile(
    r"^(?:(?P<date>\d{4}-\d{2}-\d{2}) )?(?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,7}))?"
    r"(?: (?P<offset>[+-]\d{2}:\d{2}))?"
)


def python_value(vector: dict[str, Any], sql_type: SqlType) -> tuple[Any, int]:
    """The vector's value as the Python value our column holds, and its 100 ns ticks beyond
    whole microseconds (DuckDB temporal types hold microseconds; those ticks are dropped)."""
    raw = vector["plaintext_value"]
    name = sql_type.name
    if name in ("BOOLEAN", "REAL", "DOUBLE") or sql_type.category.value == "integer":
        return raw, 0
    if name == "DECIMAL":
        return Decimal(raw), 0
    if name == "UUID":
        return uuid.UUID(raw), 0
    if name == "BLOB":
        return bytes.fromhex(raw.removeprefix("0x")), 0
    if name in ("VARCHAR", "NVARCHAR"):
        return raw, 0
    if name == "DATE":
        return dt.date.fromisoformat(raw), 0
    match = _TEMPORAL.match(raw)
    assert match is not None, raw
    fraction = (match["fraction"] or "").ljust(7, "0")
    micros, extra_ticks = int(fraction[:6]), int(fraction[6])
    clock = dt.time.fromisoformat(match["time"]).replace(microsecond=micros)
    if name == "TIME":
        return clock, extra_ticks
    moment = dt.datetime.combine(dt.date.fromisoformat(match["date"]), clock)
    if name == "TIMESTAMPTZ":
        hours, minutes = match["offset"].split(":")
        sign = -1 if hours.startswith("-") else 1
        offset = dt.timedelta(hours=abs(int(hours)), minutes=int(minutes)) * sign
        moment = moment.replace(tzinfo=dt.timezone(offset)).astimezone(UTC)
    return moment, extra_ticks


def expected_from_our_writer(vector: dict[str, Any], sql_type: SqlType) -> bytes:
    """The vector's bytes adjusted for our two documented writer choices: sub-microsecond ticks
    are not representable in DuckDB (they are zero in our output), and a TIMESTAMPTZ instant is
    written with offset 0 (the time and date fields are UTC either way)."""
    expected = bytearray(bytes.fromhex(vector["plaintext_hex"]))
    _, extra_ticks = python_value(vector, sql_type)
    if sql_type.name in ("TIME", "TIMESTAMP", "TIMESTAMPTZ"):
        assert sql_type.scale is not None
        step = 10 ** (7 - sql_type.scale)
        ticks = int.from_bytes(expected[:5], "little")
        if step == 1:
            ticks -= extra_ticks
        assert ticks % step == 0
        expected[:5] = ticks.to_bytes(5, "little")
    if sql_type.name == "TIMESTAMPTZ":
        expected[8:10] = b"\x00\x00"
    return bytes(expected)


@pytest.mark.parametrize("vector", interop_cases("normalization_form"))
def test_normalization_form_vectors(vector: dict[str, Any]) -> None:
    sql_type = declared_type(vector)
    value, _ = python_value(vector, sql_type)
    published = bytes.fromhex(vector["plaintext_hex"])
    # Read direction: the published bytes decode to the value, to the microsecond and truncated
    # to the column's fractional scale as the writer did.
    expected_value = value
    if sql_type.scale is not None and sql_type.name != "DECIMAL":
        step = 10 ** max(0, 6 - sql_type.scale)
        expected_value = value.replace(microsecond=value.microsecond // step * step)
    decoded = denormalize(pa.array([published], pa.binary()), sql_type).to_pylist()
    assert decoded == [expected_value]
    # Write direction: our bytes equal the published ones, up to the documented choices.
    cells = normalize([value], sql_type, column="vector")
    assert cells.to_pylist() == [expected_from_our_writer(vector, sql_type)]


def _typed_deterministic_cases() -> list[Any]:
    return [
        case
        for case in interop_cases("cell_encrypt_deterministic")
        if case.values[0] is None or "plaintext_type" in case.values[0]
    ]


@pytest.mark.parametrize("vector", _typed_deterministic_cases())
def test_typed_deterministic_vectors_normalize(vector: dict[str, Any]) -> None:
    sql_type = declared_type(vector)
    value, extra_ticks = python_value(vector, sql_type)
    assert extra_ticks == 0
    published = bytes.fromhex(vector["plaintext_hex"])
    assert normalize([value], sql_type).to_pylist() == [published]
    assert denormalize(pa.array([published], pa.binary()), sql_type).to_pylist() == [value]


@pytest.mark.parametrize("vector", _typed_deterministic_cases())
def test_typed_deterministic_vectors_encrypt_to_the_published_cell(vector: dict[str, Any]) -> None:
    sql_type = declared_type(vector)
    pytest.importorskip("enclave.binding", reason="the native codec (enclave.binding) is not built")
    from engine.client.codec import decrypt_column, encrypt_column

    value, _ = python_value(vector, sql_type)
    key = bytes.fromhex(vector["key_hex"])
    cells = encrypt_column([value, None], key, "DETERMINISTIC", sql_type, column="vector")
    assert cells.to_pylist() == [bytes.fromhex(vector["ciphertext_hex"]), None]
    assert decrypt_column(cells, key, sql_type, column="vector").to_pylist() == [value, None]

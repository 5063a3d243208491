"""Normalization rule v1 for a few Python values at a time, without Arrow or numpy: the fast
path of a statement that encrypts one parameter or decrypts a few result cells.

It converts only the (type, Python type) pairs it can convert exactly as `engine.normalization`
does, and answers None for the whole list when any value is something else (another Python
type, a value out of range, bytes that do not decode): the caller then runs the batch path,
whose results and errors are the reference. It must never raise for a value, never hold keys,
and never be used where its answer could differ from `engine.normalization`'s.
"""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid
from collections.abc import Callable, Sequence

from engine.types import NormalizationForm, SqlType

__all__ = ["denormalize_values", "normalize_values"]

_SKIP = object()  # "not converted here": the caller falls back to the batch path

_EPOCH_DAYS = 719_162  # 0001-01-01 to 1970-01-01
_MAX_DAY = 3_652_058  # 9999-12-31
_US_PER_DAY = 86_400_000_000
_TICKS_PER_DAY = 864_000_000_000
_MAX_OFFSET_MINUTES = 14 * 60
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_US = datetime.timedelta(microseconds=1)
_DECIMAL_DIGITS = 38  # what Arrow infers a Python Decimal into (decimal128)
_EXACT = decimal.Context(prec=100)  # more digits than any DECIMAL: scaleb never rounds
_HALF_AWAY = decimal.Context(prec=100, rounding=decimal.ROUND_HALF_UP)
_INTEGER_LIMITS = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**63 - 1),  # rule v1's signed 64-bit form
}
_PACK_INT64 = struct.Struct("<q").pack
_PACK_FLOAT64 = struct.Struct("<d").pack


def normalize_values(values: Sequence[object], sql_type: SqlType) -> list[bytes | None] | None:
    """The rule v1 bytes of each value (None stays None), or None when any value needs the
    batch path.

    >>> from engine.types import parse_sql_type
    >>> normalize_values(["Ada", None], parse_sql_type("VARCHAR"))
    [b'Ada', None]
    >>> normalize_values([1.5], parse_sql_type("INTEGER")) is None  # Arrow's cast decides
    True
    """
    if sql_type.form is NormalizationForm.DECIMAL and not _decimals_fit_arrow(values):
        return None
    convert = _encoder(sql_type)
    out: list[bytes | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        normalized = convert(value)
        if normalized is _SKIP:
            return None
        out.append(normalized)  # type: ignore[arg-type]
    return out


def denormalize_values(
    plaintexts: Sequence[bytes | None], sql_type: SqlType
) -> list[object] | None:
    """The Python value of each rule v1 plaintext (None stays None), as the batch path's Arrow
    array would hold it, or None when any plaintext needs the batch path (which raises).

    >>> from engine.types import parse_sql_type
    >>> denormalize_values([b"*" + bytes(7), None], parse_sql_type("INTEGER"))
    [42, None]
    >>> denormalize_values([b"\\xff"], parse_sql_type("VARCHAR")) is None  # not UTF-8
    True
    """
    convert = _decoder(sql_type)
    out: list[object] = []
    for plaintext in plaintexts:
        if plaintext is None:
            out.append(None)
            continue
        value = convert(plaintext)
        if value is _SKIP:
            return None
        out.append(value)
    return out


# --- Python value -> bytes ------------------------------------------------------------------


def _encoder(sql_type: SqlType) -> Callable[[object], object]:
    form = sql_type.form
    if form is NormalizationForm.INT64:
        if sql_type.name == "BOOLEAN":
            return lambda v: _PACK_INT64(int(v)) if type(v) is bool else _SKIP
        low, high = _INTEGER_LIMITS[sql_type.name]
        return lambda v: _PACK_INT64(v) if type(v) is int and low <= v <= high else _SKIP
    if form is NormalizationForm.FLOAT64:
        return _encode_float64
    if form is NormalizationForm.DECIMAL:
        return lambda v: _encode_decimal(v, sql_type)
    if form is NormalizationForm.DATE:
        return _encode_date
    if form is NormalizationForm.TIME:
        return lambda v: _encode_time(v, sql_type)
    if form is NormalizationForm.DATETIME2 or form is NormalizationForm.DATETIMEOFFSET:
        return lambda v: _encode_timestamp(v, sql_type)
    if form is NormalizationForm.UTF8:
        return lambda v: _encode_text(v, "utf-8")
    if form is NormalizationForm.UTF16LE:
        return lambda v: _encode_text(v, "utf-16-le")
    if form is NormalizationForm.BYTES:
        return lambda v: v if type(v) is bytes else _SKIP
    if form is NormalizationForm.GUID:
        return _encode_guid
    return lambda v: _SKIP  # FLOAT32: Arrow's double-to-float cast decides


def _encode_float64(value: object) -> object:
    if type(value) is not float:
        return _SKIP
    if value != value:
        return _PACK_FLOAT64(float("nan"))  # one bit pattern for every NaN
    return _PACK_FLOAT64(value + 0.0)  # -0.0 becomes +0.0


def _encode_date(value: object) -> object:
    if type(value) is not datetime.date:
        return _SKIP
    return (value.toordinal() - 1).to_bytes(3, "little")  # day 0 is 0001-01-01


def _encode_guid(value: object) -> object:
    if type(value) is not uuid.UUID:  # text and other types: the batch path parses them
        return _SKIP
    return value.bytes_le  # .NET Guid.ToByteArray() order


def _encode_text(value: object, codec: str) -> object:
    if type(value) is not str:
        return _SKIP
    try:
        return value.encode(codec)
    except UnicodeError:
        return _SKIP


def _ticks(micros: int, sql_type: SqlType) -> int:
    """100 ns ticks, truncated (never rounded) to the column's fractional scale."""
    assert sql_type.scale is not None
    step: int = 10 ** (7 - sql_type.scale)
    return micros * 10 // step * step


def _encode_time(value: object, sql_type: SqlType) -> object:
    if type(value) is not datetime.time or value.tzinfo is not None:
        return _SKIP
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return _ticks(micros + value.microsecond, sql_type).to_bytes(5, "little")


def _encode_timestamp(value: object, sql_type: SqlType) -> object:
    if type(value) is not datetime.datetime:
        return _SKIP
    if sql_type.form is NormalizationForm.DATETIMEOFFSET:
        if value.tzinfo is None or value.utcoffset() is None:
            return _SKIP
        micros = (value - _EPOCH_UTC) // _ONE_US
    else:
        if value.tzinfo is not None:
            return _SKIP
        micros = (value - _EPOCH) // _ONE_US
    days, rest = divmod(micros, _US_PER_DAY)
    cell = _ticks(rest, sql_type).to_bytes(5, "little") + (days + _EPOCH_DAYS).to_bytes(3, "little")
    # An instant is written with offset 0: the time and date fields are UTC in any case.
    return cell + bytes(2) if sql_type.form is NormalizationForm.DATETIMEOFFSET else cell


def _decimal_shape(value: object) -> tuple[int, int] | None:
    """(integer digits, scale) as Arrow infers a decimal128 from the value, or None when the
    value is not an int or finite Decimal."""
    if type(value) is int:
        value = decimal.Decimal(value)
    if type(value) is not decimal.Decimal or not value.is_finite():
        return None
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(-exponent, 0)
    return max(len(digits) + exponent, 1 if scale == 0 else 0), scale


def _decimals_fit_arrow(values: Sequence[object]) -> bool:
    """Whether Arrow infers one decimal128 type for all the values (else the batch path
    raises, and so must the caller)."""
    shapes = [_decimal_shape(value) for value in values if value is not None]
    if any(shape is None for shape in shapes):
        return False
    known = [shape for shape in shapes if shape is not None]
    if not known:
        return True
    return max(s[0] for s in known) + max(s[1] for s in known) <= _DECIMAL_DIGITS


def _encode_decimal(value: object, sql_type: SqlType) -> object:
    assert sql_type.precision is not None and sql_type.scale is not None
    number = decimal.Decimal(value) if type(value) is int else value
    assert isinstance(number, decimal.Decimal)
    context = _HALF_AWAY  # rounds half away from zero, as DuckDB and the batch path do
    unscaled = int(number.scaleb(sql_type.scale, context).to_integral_value(context=context))
    if abs(unscaled) >= 10**sql_type.precision:
        return _SKIP
    return (b"\x00" if unscaled < 0 else b"\x01") + abs(unscaled).to_bytes(16, "little")


# --- bytes -> Python value ------------------------------------------------------------------


def _decoder(sql_type: SqlType) -> Callable[[bytes], object]:
    form = sql_type.form
    if form is NormalizationForm.INT64:
        return lambda p: _decode_integer(p, sql_type)
    if form is NormalizationForm.FLOAT64:
        return lambda p: struct.unpack("<d", p)[0] if len(p) == 8 else _SKIP
    if form is NormalizationForm.FLOAT32:
        return lambda p: struct.unpack("<f", p)[0] if len(p) == 4 else _SKIP
    if form is NormalizationForm.DECIMAL:
        return lambda p: _decode_decimal(p, sql_type)
    if form is NormalizationForm.DATE:
        return _decode_date
    if form is NormalizationForm.TIME:
        return _decode_time
    if form is NormalizationForm.DATETIME2 or form is NormalizationForm.DATETIMEOFFSET:
        return lambda p: _decode_timestamp(p, sql_type)
    if form is NormalizationForm.UTF8:
        return lambda p: _decode_text(p, "utf-8")
    if form is NormalizationForm.UTF16LE:
        return lambda p: _decode_text(p, "utf-16-le") if len(p) % 2 == 0 else _SKIP
    if form is NormalizationForm.BYTES:
        return lambda p: p
    return lambda p: uuid.UUID(bytes_le=p) if len(p) == 16 else _SKIP


def _decode_integer(plaintext: bytes, sql_type: SqlType) -> object:
    if len(plaintext) != 8:
        return _SKIP
    value = int.from_bytes(plaintext, "little", signed=True)
    if sql_type.name == "BOOLEAN":
        return bool(value) if value in (0, 1) else _SKIP
    low, high = _INTEGER_LIMITS[sql_type.name]
    return value if low <= value <= high else _SKIP


def _decode_decimal(plaintext: bytes, sql_type: SqlType) -> object:
    assert sql_type.precision is not None and sql_type.scale is not None
    if len(plaintext) != 17 or plaintext[0] > 1:
        return _SKIP  # other lengths (JDBC, tedious) are the batch path's
    magnitude = int.from_bytes(plaintext[1:], "little")
    if magnitude >= 10**sql_type.precision:
        return _SKIP
    unscaled = -magnitude if plaintext[0] == 0 else magnitude
    return decimal.Decimal(unscaled).scaleb(-sql_type.scale, _EXACT)


def _decode_date(plaintext: bytes) -> object:
    if len(plaintext) != 3:
        return _SKIP
    days = int.from_bytes(plaintext, "little")
    return datetime.date.fromordinal(days + 1) if days <= _MAX_DAY else _SKIP


def _decode_time(plaintext: bytes) -> object:
    if len(plaintext) != 5:
        return _SKIP
    ticks = int.from_bytes(plaintext, "little")
    if ticks >= _TICKS_PER_DAY:
        return _SKIP
    seconds, micros = divmod(ticks // 10, 1_000_000)
    minutes, second = divmod(seconds, 60)
    return datetime.time(minutes // 60, minutes % 60, second, micros)


def _decode_timestamp(plaintext: bytes, sql_type: SqlType) -> object:
    offset = sql_type.form is NormalizationForm.DATETIMEOFFSET
    if len(plaintext) != (10 if offset else 8):
        return _SKIP
    ticks = int.from_bytes(plaintext[:5], "little")
    days = int.from_bytes(plaintext[5:8], "little")
    if ticks >= _TICKS_PER_DAY or days > _MAX_DAY:
        return _SKIP
    if offset and abs(int.from_bytes(plaintext[8:10], "little", signed=True)) > _MAX_OFFSET_MINUTES:
        return _SKIP
    micros = (days - _EPOCH_DAYS) * _US_PER_DAY + ticks // 10
    return (_EPOCH_UTC if offset else _EPOCH) + datetime.timedelta(microseconds=micros)


def _decode_text(plaintext: bytes, codec: str) -> object:
    try:
        return plaintext.decode(codec)
    except UnicodeError:
        return _SKIP

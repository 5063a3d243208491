"""Normalization rule version 1: plaintext column values <-> the bytes that get encrypted.

Whole Arrow columns are converted with numpy views over the Arrow buffers, never row by row in
Python (Python sequences go through Arrow's converter first; UUID text is parsed per row). It
is neutral ground: the client's codec and the host's in-enclave encryption of a plaintext column
both use it. It does no crypto, holds no keys, and its error messages name the column and type,
never a value.
"""

from __future__ import annotations

import decimal
import functools
import math
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import DataError
from engine.types import NormalizationForm, SqlType, parse_sql_type

__all__ = ["denormalize", "normalize"]

_Bytes = npt.NDArray[np.uint8]
_Mask = npt.NDArray[np.bool_]

# Days from 0001-01-01 (day 0 of SQL Server's date) to 1970-01-01 (day 0 of Arrow's date32).
_EPOCH_DAYS = 719_162
_MAX_DAY = 3_652_058  # 9999-12-31
_US_PER_DAY = 86_400_000_000
_TICKS_PER_DAY = 864_000_000_000  # 100 ns ticks
_MAX_OFFSET_MINUTES = 14 * 60  # datetimeoffset allows -14:00..+14:00
# .NET Guid.ToByteArray() stores the first three fields little-endian; the permutation is its
# own inverse, so the same index array converts both ways.
_GUID_ORDER = np.array([3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15])
_INT32_LIMIT = 2**31 - 1


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _detach_suppressed(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """DataErrors leave without the context they were raised ``from None`` over: that Arrow or
    codec error can quote the value, and the exception object would keep it alive."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except DataError as error:
            if error.__suppress_context__:
                error.__context__ = None
            raise

    return wrapper


@_detach_suppressed
def normalize(values: Any, sql_type: SqlType | str, *, column: str | None = None) -> pa.Array:
    """Serialize plaintext values to rule v1 bytes, one binary cell per value; nulls stay null.

    `values` is a pa.Array, a pa.ChunkedArray or a Python sequence; anything that is not already
    of `sql_type.arrow_type` is converted with a checked Arrow cast. Returns a pa.BinaryArray (a
    LargeBinaryArray only past 2 GiB of output). A value that cannot be encoded raises DataError
    naming the column.

    >>> normalize([42, None, -1], "INTEGER").to_pylist()
    [b'*\\x00\\x00\\x00\\x00\\x00\\x00\\x00', None, b'\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff']
    >>> normalize(["Ada"], "NVARCHAR(50)").to_pylist()
    [b'A\\x00d\\x00a\\x00']
    """
    sql_type = _as_type(sql_type)
    where = _where(column, sql_type)
    array = _coerce(values, sql_type, where)
    valid = _valid_mask(array)
    form = sql_type.form
    if form is NormalizationForm.UTF8:
        return _utf8_to_binary(array)
    if form is NormalizationForm.UTF16LE:
        return _utf8_to_utf16(array, valid, where)
    if form is NormalizationForm.BYTES:
        return _fit_binary(array)
    if form is NormalizationForm.INT64:
        matrix = _normalize_int64(array, sql_type, valid, where)
    elif form is NormalizationForm.FLOAT32 or form is NormalizationForm.FLOAT64:
        matrix = _normalize_float(array, sql_type, valid, where)
    elif form is NormalizationForm.DECIMAL:
        matrix = _normalize_decimal(array, valid)
    elif form is NormalizationForm.DATE:
        days = _numpy(array, np.int32).astype(np.int64) + _EPOCH_DAYS
        _check_days(days, valid, where)
        matrix = _little_endian(days, 3)
    elif form is NormalizationForm.TIME:
        micros = _numpy(array, np.int64)
        if np.any(valid & ((micros < 0) | (micros >= _US_PER_DAY))):
            raise DataError(f"{where}: a time is outside 00:00:00 to 23:59:59.999999")
        matrix = _little_endian(_truncate_ticks(micros * 10, sql_type), 5)
    elif form is NormalizationForm.DATETIME2 or form is NormalizationForm.DATETIMEOFFSET:
        matrix = _normalize_timestamp(array, sql_type, valid, where)
    else:
        matrix = _normalize_guid(array)
    return _binary_from_matrix(matrix, valid)


@_detach_suppressed
def denormalize(cells: Any, sql_type: SqlType | str, *, column: str | None = None) -> pa.Array:
    """Parse rule v1 plaintext bytes back into values of `sql_type.arrow_type`; nulls stay null.

    The exact inverse of `normalize`. Cells of the wrong length for the type, and values that do
    not fit the declared type (a 300 in a TINYINT column, a day after 9999-12-31) raise DataError
    naming the column; nothing wraps or is clamped silently.

    >>> cells = normalize([12.5, None], "DECIMAL(10,2)")
    >>> denormalize(cells, "DECIMAL(10,2)").to_pylist()
    [Decimal('12.50'), None]
    """
    sql_type = _as_type(sql_type)
    where = _where(column, sql_type)
    array = _binary_input(cells, where)
    valid = _valid_mask(array)
    form = sql_type.form
    if form is NormalizationForm.UTF8:
        return _binary_to_utf8(array, where)
    if form is NormalizationForm.UTF16LE:
        return _utf16_to_utf8(array, valid, where)
    if form is NormalizationForm.BYTES:
        return _fit_binary(array)
    if form is NormalizationForm.DECIMAL:
        return _denormalize_decimal(array, sql_type, valid, where)
    width = sql_type.normalized_width
    assert width is not None
    matrix = _fixed_matrix(array, width, valid, where)
    mask = ~valid
    if form is NormalizationForm.INT64:
        return _denormalize_int64(matrix, sql_type, valid, where)
    if form is NormalizationForm.FLOAT32:
        return pa.array(matrix.view("<f4").reshape(-1), type=pa.float32(), mask=mask)
    if form is NormalizationForm.FLOAT64:
        return pa.array(matrix.view("<f8").reshape(-1), type=pa.float64(), mask=mask)
    if form is NormalizationForm.DATE:
        days = _read_unsigned(matrix)
        _check_days(days, valid, where)
        return pa.array((days - _EPOCH_DAYS).astype(np.int32), mask=mask).cast(pa.date32())
    if form is NormalizationForm.TIME:
        ticks = _read_ticks(matrix[:, :5], valid, where)
        return pa.array(ticks // 10, mask=mask).cast(pa.time64("us"))
    if form is NormalizationForm.DATETIME2 or form is NormalizationForm.DATETIMEOFFSET:
        return _denormalize_timestamp(matrix, sql_type, valid, where)
    return _denormalize_guid(matrix, valid)


# --- input handling -------------------------------------------------------------------------


def _as_type(sql_type: SqlType | str) -> SqlType:
    return sql_type if isinstance(sql_type, SqlType) else parse_sql_type(sql_type)


def _where(column: str | None, sql_type: SqlType) -> str:
    return f"column {column} ({sql_type})" if column else f"type {sql_type}"


def _coerce(values: Any, sql_type: SqlType, where: str) -> pa.Array:
    """An array of exactly the column's Arrow type (large_string kept for strings)."""
    target = sql_type.arrow_type
    expected = f"expected {sql_type} values ({target})"
    if isinstance(values, pa.ChunkedArray):
        values = _combine(values)
    elif not isinstance(values, pa.Array):
        values = _from_python(values, sql_type, where, expected)
    if values.type == target:
        return values
    if sql_type.form in (
        NormalizationForm.UTF8,
        NormalizationForm.UTF16LE,
    ) and pa.types.is_large_string(values.type):
        return values
    if sql_type.form is NormalizationForm.BYTES and pa.types.is_large_binary(values.type):
        return values
    if sql_type.form is NormalizationForm.DECIMAL:
        return _coerce_decimal(values, sql_type, where, expected)
    if sql_type.form is NormalizationForm.GUID and pa.types.is_fixed_size_binary(values.type):
        if values.type.byte_width == 16:
            return pa.ExtensionArray.from_storage(pa.uuid(), values)
    if sql_type.form is NormalizationForm.GUID and (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        # DuckDB exports UUID columns to Arrow as text unless arrow_lossless_conversion is
        # set; Arrow has no text-to-UUID cast, so the text is parsed one value at a time.
        items = [_uuid_item(item, where) for item in values.to_pylist()]
        return pa.array(items, type=pa.uuid())
    try:
        if pa.types.is_floating(target) and pa.types.is_decimal(values.type):
            # Arrow's decimal-to-float cast can miss by one ulp; its text-to-float parse rounds
            # correctly, as DuckDB does for a literal such as 390462361538.3544.
            values = pc.cast(values, pa.string())
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # Arrow's own message can quote a value, so it is not chained.
        raise DataError(
            f"{where}: a value is of the wrong type or out of range; {expected}"
        ) from None


def _from_python(values: Any, sql_type: SqlType, where: str, expected: str) -> pa.Array:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise DataError(f"{where}: values must be a sequence or an Arrow array; {expected}")
    items = list(values)
    if sql_type.form is NormalizationForm.GUID:
        # Arrow has no text-to-UUID cast, so text UUIDs are parsed one by one.
        items = [_uuid_item(item, where) for item in items]
    elif sql_type.form is NormalizationForm.DECIMAL:
        # Arrow cannot infer one type for a mix of Decimal, int and float (nor ints past 64
        # bits); Python floats become the Decimal of their shortest text, the number as typed.
        items = [_decimal_item(item) for item in items]
    try:
        return pa.array(items) if items else pa.array([], type=sql_type.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: a value could not be converted; {expected}") from None


def _decimal_item(item: object) -> object:
    if isinstance(item, bool):
        return item  # left for Arrow to reject
    if isinstance(item, int):
        return decimal.Decimal(item)
    if isinstance(item, float):
        return decimal.Decimal(repr(item))
    return item


def _uuid_item(item: object, where: str) -> object:
    """A uuid.UUID for text (checked), None for a missing value, else the item unchanged.

    A pandas object column of UUIDs marks its missing values with pd.NA (or NaN), which Arrow
    does not read as null among UUID objects.
    """
    if isinstance(item, float) and math.isnan(item):
        return None
    if type(item).__name__ == "NAType" and type(item).__module__.startswith("pandas"):
        return None
    if isinstance(item, str):
        try:
            return uuid.UUID(item)
        except ValueError:
            raise DataError(f"{where}: a text value is not a UUID") from None
    return item


def _coerce_decimal(values: pa.Array, sql_type: SqlType, where: str, expected: str) -> pa.Array:
    """Rescale to the column scale, rounding half away from zero as DuckDB does, then check that
    the result fits the column precision."""
    target = sql_type.arrow_type
    assert sql_type.scale is not None
    wide_type = pa.decimal256(76, sql_type.scale)
    kind = values.type
    try:
        if pa.types.is_decimal(kind) and kind.scale > sql_type.scale:
            widened = pc.cast(values, pa.decimal256(76, kind.scale))
            rounded = pc.round(widened, ndigits=sql_type.scale, round_mode="half_towards_infinity")
            wide = pc.cast(rounded, wide_type)
        elif pa.types.is_decimal(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
            # Floats are converted from their exact binary value, rounded to the nearest.
            if pa.types.is_floating(kind):
                if pc.any(pc.invert(pc.is_finite(values))).as_py() is True:
                    raise DataError(f"{where}: NaN and infinity are not DECIMAL values")
            wide = pc.cast(values, wide_type)
        else:
            wide = pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise DataError(f"{where}: a value could not be converted; {expected}") from None
    try:
        return pc.cast(wide, target)
    except pa.ArrowInvalid:
        raise DataError(
            f"{where}: a value does not fit precision {sql_type.precision}; "
            "declare a larger DECIMAL precision"
        ) from None


def _combine(chunked: pa.ChunkedArray) -> pa.Array:
    if chunked.num_chunks == 0:
        return pa.array([], type=chunked.type)
    return chunked.combine_chunks()


def _binary_input(cells: Any, where: str) -> pa.Array:
    if isinstance(cells, pa.ChunkedArray):
        cells = _combine(cells)
    if not isinstance(cells, pa.Array):
        if isinstance(cells, (str, bytes)) or not isinstance(cells, Iterable):
            raise DataError(f"{where}: normalized cells must be a binary Arrow array")
        try:
            cells = pa.array(list(cells), type=pa.binary())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            raise DataError(f"{where}: normalized cells must be bytes values") from None
    if pa.types.is_binary(cells.type) or pa.types.is_large_binary(cells.type):
        return cells
    if pa.types.is_fixed_size_binary(cells.type):
        return pc.cast(cells, pa.binary())
    raise DataError(f"{where}: normalized cells must be binary, not {cells.type}")


def _valid_mask(array: pa.Array) -> _Mask:
    if array.null_count == 0:
        return np.ones(len(array), dtype=np.bool_)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def _numpy(array: pa.Array, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """The values as a numpy array of `dtype`; null slots hold zero."""
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    if pa.types.is_temporal(storage.type):
        storage = storage.view(pa.int32() if dtype == np.int32 else pa.int64())
    elif pa.types.is_boolean(storage.type):
        storage = pc.cast(storage, pa.int8())
    filled = storage.fill_null(0) if storage.null_count else storage
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=dtype)


# --- fixed-width forms ----------------------------------------------------------------------


def _binary_from_matrix(matrix: _Bytes, valid: _Mask) -> pa.Array:
    """One binary cell per row of `matrix`; null rows become empty null cells."""
    width = matrix.shape[1]
    rows = np.ascontiguousarray(matrix if valid.all() else matrix[valid])
    lengths = valid.astype(np.int64) * width
    offsets = np.zeros(len(valid) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _binary_from_parts(offsets, rows.reshape(-1), valid)


def _binary_from_parts(
    offsets: npt.NDArray[np.int64], data: _Bytes, valid: _Mask, kind: str = "binary"
) -> pa.Array:
    large = offsets[-1] > _INT32_LIMIT
    offset_buffer = pa.py_buffer(offsets if large else offsets.astype(np.int32))
    if kind == "binary":
        arrow_type = pa.large_binary() if large else pa.binary()
    else:
        arrow_type = pa.large_string() if large else pa.string()
    null_count = int(len(valid) - np.count_nonzero(valid))
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    return pa.Array.from_buffers(
        arrow_type, len(valid), [validity, offset_buffer, pa.py_buffer(data)], null_count
    )


def _little_endian(values: npt.NDArray[np.int64], width: int) -> _Bytes:
    """The low `width` bytes of each int64, little-endian, as an (n, width) matrix."""
    as_bytes = np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(-1, 8)
    return as_bytes[:, :width]


def _read_unsigned(matrix: _Bytes) -> npt.NDArray[np.int64]:
    """Little-endian unsigned integers of up to 7 bytes, one per row."""
    padded = np.zeros((matrix.shape[0], 8), dtype=np.uint8)
    padded[:, : matrix.shape[1]] = matrix
    return padded.view("<i8").reshape(-1).astype(np.int64)


def _offsets_and_data(array: pa.Array) -> tuple[npt.NDArray[np.int64], _Bytes]:
    """Absolute offsets (n + 1) into the data buffer of a (large) binary or string array."""
    buffers = array.buffers()
    offset_type = np.int64 if array.type in (pa.large_binary(), pa.large_string()) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[
        array.offset : array.offset + len(array) + 1
    ].astype(np.int64)
    if len(array) == 0:
        offsets = np.zeros(1, dtype=np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else _empty()
    return offsets, data


def _empty() -> _Bytes:
    return np.zeros(0, dtype=np.uint8)


def _fixed_matrix(array: pa.Array, width: int, valid: _Mask, where: str) -> _Bytes:
    """The valid cells as an (n, width) matrix (zero rows for nulls); other lengths raise."""
    offsets, data = _offsets_and_data(array)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    if np.any(valid & (lengths != width)):
        raise DataError(
            f"{where}: a decrypted value has the wrong length for the column type "
            f"({width} bytes expected); it was written for a different type"
        )
    if valid.all() and len(starts) and np.all(lengths == width):
        begin = int(starts[0])
        return data[begin : begin + width * len(starts)].reshape(-1, width)
    matrix = np.zeros((len(valid), width), dtype=np.uint8)
    matrix[valid] = data[starts[valid][:, None] + np.arange(width)]
    return matrix


def _normalize_int64(array: pa.Array, sql_type: SqlType, valid: _Mask, where: str) -> _Bytes:
    if sql_type.name == "UBIGINT":
        values = _numpy(array, np.uint64)
        if np.any(values[valid] > np.iinfo(np.int64).max):
            raise DataError(
                f"{where}: a value is above 2^63-1, which rule v1's signed 64-bit form cannot "
                "hold; declare a DECIMAL(20,0) column for larger values"
            )
        signed = values.astype(np.int64)
    else:
        signed = _numpy(array, np.int64)
    return _little_endian(signed, 8)


_INTEGER_LIMITS = {
    "BOOLEAN": (0, 1, np.bool_),
    "TINYINT": (-(2**7), 2**7 - 1, np.int8),
    "SMALLINT": (-(2**15), 2**15 - 1, np.int16),
    "INTEGER": (-(2**31), 2**31 - 1, np.int32),
    "BIGINT": (-(2**63), 2**63 - 1, np.int64),
    "UTINYINT": (0, 2**8 - 1, np.uint8),
    "USMALLINT": (0, 2**16 - 1, np.uint16),
    "UINTEGER": (0, 2**32 - 1, np.uint32),
    "UBIGINT": (0, 2**63 - 1, np.uint64),
}


def _denormalize_int64(matrix: _Bytes, sql_type: SqlType, valid: _Mask, where: str) -> pa.Array:
    values = np.ascontiguousarray(matrix).view("<i8").reshape(-1)
    low, high, dtype = _INTEGER_LIMITS[sql_type.name]
    if np.any(valid & ((values < low) | (values > high))):
        raise DataError(f"{where}: a decrypted value does not fit the column type ({low}..{high})")
    return pa.array(values.astype(dtype), type=sql_type.arrow_type, mask=~valid)


def _normalize_float(array: pa.Array, sql_type: SqlType, valid: _Mask, where: str) -> _Bytes:
    single = sql_type.form is NormalizationForm.FLOAT32
    values = _numpy(array, np.float32 if single else np.float64)
    if single and not np.all(np.isfinite(values[valid])):
        raise DataError(
            f"{where}: NaN and infinity cannot be stored in REAL (SQL Server rejects them), and "
            "a value too large for 4 bytes becomes infinity; declare DOUBLE instead"
        )
    # -0.0 + 0.0 is +0.0, so equal numbers get equal bytes, as DuckDB has -0.0 = 0.0. Every NaN
    # gets one bit pattern, as DuckDB treats all NaNs as equal.
    with np.errstate(invalid="ignore"):  # a signalling NaN input is fine: it is replaced
        values = values + values.dtype.type(0)
    values[np.isnan(values)] = np.nan
    width = 4 if single else 8
    return np.ascontiguousarray(values).view(np.uint8).reshape(-1, width)


# The magnitude limit 10^p of DECIMAL(p, s), as (high, low) 64-bit words.
_POWERS_OF_TEN = [divmod(10**p, 2**64) for p in range(39)]


def _normalize_decimal(array: pa.Array, valid: _Mask) -> _Bytes:
    words = np.frombuffer(array.buffers()[1], dtype="<u8")
    words = words[2 * array.offset : 2 * (array.offset + len(array))].reshape(-1, 2).copy()
    words[~valid] = 0
    low, high = words[:, 0], words[:, 1]
    negative = (high >> np.uint64(63)).astype(np.bool_)
    # Two's complement negation over the 128-bit (high, low) pair: invert, add one, carry.
    negated_low = ~low + np.uint64(1)
    negated_high = ~high + (negated_low == 0).astype(np.uint64)
    magnitude = np.empty((len(words), 2), dtype="<u8")
    magnitude[:, 0] = np.where(negative, negated_low, low)
    magnitude[:, 1] = np.where(negative, negated_high, high)
    matrix = np.empty((len(words), 17), dtype=np.uint8)
    matrix[:, 0] = ~negative  # 1 = positive or zero
    matrix[:, 1:] = magnitude.view(np.uint8).reshape(-1, 16)
    return matrix


def _denormalize_decimal(array: pa.Array, sql_type: SqlType, valid: _Mask, where: str) -> pa.Array:
    """Reads sign + little-endian magnitude of any length >= 1: SqlClient writes 17 bytes, JDBC
    16 and tedious 9, and all of them decrypt interchangeably."""
    assert sql_type.precision is not None
    offsets, data = _offsets_and_data(array)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    words = np.zeros((len(valid), 2), dtype="<u8")
    limit_high, limit_low = _POWERS_OF_TEN[sql_type.precision]
    # Nearly always every cell is our 17 bytes: one pass, no per-length grouping.
    uniform = bool(np.all(lengths[valid] == 17))
    present = np.array([17]) if uniform else np.unique(lengths[valid])
    for length in present:
        if length < 1:
            raise DataError(f"{where}: a decrypted DECIMAL value is empty")
        rows = valid & (lengths == length)
        if uniform:
            cells = _fixed_matrix(array, 17, valid, where)[valid]
        else:
            cells = data[starts[rows][:, None] + np.arange(length)]
        if np.any(cells[:, 0] > 1):
            raise DataError(f"{where}: a decrypted DECIMAL value has an invalid sign byte")
        if length > 17 and np.any(cells[:, 17:]):
            raise DataError(f"{where}: a decrypted value does not fit {sql_type}")
        padded = np.zeros((len(cells), 16), dtype=np.uint8)
        used = min(int(length) - 1, 16)
        padded[:, :used] = cells[:, 1 : 1 + used]
        pair = padded.view("<u8")
        low, high = pair[:, 0], pair[:, 1]
        too_big = (high > np.uint64(limit_high)) | (
            (high == np.uint64(limit_high)) & (low >= np.uint64(limit_low))
        )
        if np.any(too_big):
            raise DataError(f"{where}: a decrypted value does not fit {sql_type}")
        negative = cells[:, 0] == 0
        negated_low = ~low + np.uint64(1)
        negated_high = ~high + (negated_low == 0).astype(np.uint64)
        words[rows, 0] = np.where(negative, negated_low, low)
        words[rows, 1] = np.where(negative, negated_high, high)
    null_count = int(len(valid) - np.count_nonzero(valid))
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    return pa.Array.from_buffers(
        sql_type.arrow_type, len(valid), [validity, pa.py_buffer(words)], null_count
    )


def _check_days(days: npt.NDArray[np.int64], valid: _Mask, where: str) -> None:
    if np.any(valid & ((days < 0) | (days > _MAX_DAY))):
        raise DataError(f"{where}: a date is outside 0001-01-01 to 9999-12-31")


def _truncate_ticks(ticks: npt.NDArray[np.int64], sql_type: SqlType) -> npt.NDArray[np.int64]:
    """SqlClient truncates (never rounds) 100 ns ticks to the column's fractional scale."""
    assert sql_type.scale is not None
    step = 10 ** (7 - sql_type.scale)
    return ticks if step == 1 else ticks // step * step


def _read_ticks(matrix: _Bytes, valid: _Mask, where: str) -> npt.NDArray[np.int64]:
    ticks = _read_unsigned(matrix)
    if np.any(valid & (ticks >= _TICKS_PER_DAY)):
        raise DataError(f"{where}: a decrypted time of day is not below 24:00:00")
    return ticks


def _normalize_timestamp(array: pa.Array, sql_type: SqlType, valid: _Mask, where: str) -> _Bytes:
    micros = _numpy(array, np.int64)
    days = np.floor_divide(micros, _US_PER_DAY)
    ticks = _truncate_ticks((micros - days * _US_PER_DAY) * 10, sql_type)
    days = days + _EPOCH_DAYS
    _check_days(days, valid, where)
    offset = sql_type.form is NormalizationForm.DATETIMEOFFSET
    matrix = np.zeros((len(micros), 10 if offset else 8), dtype=np.uint8)
    matrix[:, :5] = _little_endian(ticks, 5)
    matrix[:, 5:8] = _little_endian(days, 3)
    # An instant is written with offset 0: the time and date fields are UTC in any case.
    return matrix


def _denormalize_timestamp(matrix: _Bytes, sql_type: SqlType, valid: _Mask, where: str) -> pa.Array:
    ticks = _read_ticks(matrix[:, :5], valid, where)
    days = _read_unsigned(matrix[:, 5:8])
    _check_days(days, valid, where)
    if sql_type.form is NormalizationForm.DATETIMEOFFSET:
        # The stored time and date are already UTC; the offset only says which local time the
        # writer saw, so it is checked but does not move the instant.
        minutes = np.ascontiguousarray(matrix[:, 8:10]).view("<i2").reshape(-1)
        if np.any(valid & (np.abs(minutes.astype(np.int64)) > _MAX_OFFSET_MINUTES)):
            raise DataError(f"{where}: a decrypted offset is outside -14:00 to +14:00")
    micros = (days - _EPOCH_DAYS) * _US_PER_DAY + ticks // 10
    return pa.array(micros, mask=~valid).cast(sql_type.arrow_type)


def _normalize_guid(array: pa.Array) -> _Bytes:
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8)
    rows = raw[16 * storage.offset : 16 * (storage.offset + len(storage))].reshape(-1, 16)
    return rows[:, _GUID_ORDER]


def _denormalize_guid(matrix: _Bytes, valid: _Mask) -> pa.Array:
    rows = np.ascontiguousarray(matrix[:, _GUID_ORDER])
    rows[~valid] = 0
    null_count = int(len(valid) - np.count_nonzero(valid))
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    storage = pa.Array.from_buffers(
        pa.binary(16), len(valid), [validity, pa.py_buffer(rows)], null_count
    )
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


# --- variable-width forms -------------------------------------------------------------------


def _fit_binary(array: pa.Array) -> pa.Array:
    """binary, or large_binary only when the data does not fit 32-bit offsets."""
    if pa.types.is_large_binary(array.type):
        offsets, _ = _offsets_and_data(array)
        if offsets[-1] - offsets[0] <= _INT32_LIMIT:
            return pc.cast(array, pa.binary())
        return array
    if pa.types.is_binary(array.type):
        return array
    return pc.cast(array, pa.binary())


def _utf8_to_binary(array: pa.Array) -> pa.Array:
    # Arrow's UTF-8 strings are already the normalized form: reinterpret, no copy.
    large = pa.types.is_large_string(array.type)
    return _fit_binary(array.view(pa.large_binary() if large else pa.binary()))


def _binary_to_utf8(array: pa.Array, where: str) -> pa.Array:
    large = pa.types.is_large_binary(array.type)
    text = array.view(pa.large_string() if large else pa.string())
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        raise DataError(f"{where}: a decrypted value is not valid UTF-8") from None
    if large:
        offsets, _ = _offsets_and_data(text)
        if offsets[-1] - offsets[0] <= _INT32_LIMIT:
            return pc.cast(text, pa.string())
    return text


def _dense_parts(array: pa.Array) -> tuple[npt.NDArray[np.int64], _Bytes]:
    """Offsets relative to the start of the data, and the data, with null slots emptied."""
    if array.null_count:
        empty = (
            b"" if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type) else ""
        )
        array = array.fill_null(empty)
    offsets, data = _offsets_and_data(array)
    return offsets - offsets[0], data[int(offsets[0]) : int(offsets[-1])]


def _utf8_to_utf16(array: pa.Array, valid: _Mask, where: str) -> pa.Array:
    offsets, data = _dense_parts(array)
    if not np.any(data & 0x80):
        # ASCII: each byte becomes the code unit (byte, 0).
        out = np.zeros(2 * len(data), dtype=np.uint8)
        out[0::2] = data
        return _binary_from_parts(offsets * 2, out, valid)
    # Transcode the whole buffer in one codec call, then map the offsets: each row has one
    # UTF-16 code unit per code point, plus one more per astral code point (a surrogate pair,
    # whose UTF-8 lead byte is >= 0xF0).
    try:
        encoded = data.tobytes().decode("utf-8").encode("utf-16-le")
    except UnicodeError:
        raise DataError(f"{where}: a value is not valid UTF-8 text") from None
    if np.any(data >= 0xF0):
        units = ((data & 0xC0) != 0x80).astype(np.int64) + (data >= 0xF0)
        cumulative = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum(units, out=cumulative[1:])
        new_offsets = 2 * cumulative[offsets]
    else:
        dense = pa.Array.from_buffers(
            pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        code_points = _numpy(pc.utf8_length(dense), np.int64)
        new_offsets = np.zeros(len(offsets), dtype=np.int64)
        np.cumsum(2 * code_points, out=new_offsets[1:])
    return _binary_from_parts(new_offsets, np.frombuffer(encoded, dtype=np.uint8), valid)


def _utf16_to_utf8(array: pa.Array, valid: _Mask, where: str) -> pa.Array:
    offsets, data = _dense_parts(array)
    if np.any((offsets[1:] - offsets[:-1]) % 2):
        raise DataError(f"{where}: a decrypted value has an odd length, so it is not UTF-16LE")
    code_units = data.view("<u2")
    unit_offsets = offsets // 2
    if not np.any(code_units >= 0x80):
        return _binary_from_parts(unit_offsets, np.ascontiguousarray(data[0::2]), valid, "string")
    # A surrogate pair must not straddle two cells: no cell may start with a low surrogate or
    # end with a high one. With that, decoding the whole buffer at once is per-cell correct.
    starts, ends = unit_offsets[:-1], unit_offsets[1:]
    nonempty = ends > starts
    first = code_units[starts[nonempty]]
    last = code_units[ends[nonempty] - 1]
    if np.any((first >= 0xDC00) & (first <= 0xDFFF)) or np.any((last >= 0xD800) & (last <= 0xDBFF)):
        raise DataError(f"{where}: a decrypted value is not valid UTF-16LE text")
    try:
        encoded = data.tobytes().decode("utf-16-le").encode("utf-8")
    except UnicodeError:
        raise DataError(f"{where}: a decrypted value is not valid UTF-16LE text") from None
    # UTF-8 bytes per code unit: 1, 2 or 3 by value; a high surrogate carries the pair's 4 bytes
    # and its low surrogate none.
    sizes = np.full(len(code_units), 3, dtype=np.int64)
    sizes[code_units < 0x800] = 2
    sizes[code_units < 0x80] = 1
    sizes[(code_units >= 0xD800) & (code_units <= 0xDBFF)] = 4
    sizes[(code_units >= 0xDC00) & (code_units <= 0xDFFF)] = 0
    cumulative = np.zeros(len(code_units) + 1, dtype=np.int64)
    np.cumsum(sizes, out=cumulative[1:])
    return _binary_from_parts(
        cumulative[unit_offsets], np.frombuffer(encoded, dtype=np.uint8), valid, "string"
    )

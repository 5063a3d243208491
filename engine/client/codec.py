"""The offline column codec: plaintext column values <-> Always Encrypted cells under one CEK.

It normalizes with rule v1 and calls the native codec (enclave.binding) once per column. A few
values (a statement's parameters, a small result) take a path without Arrow or numpy, with the
same results and errors (engine.normalization_values falls back to the batch path for anything
it does not convert exactly). A key given as bytes is loaded into a native key object for one
call, which is wiped on every exit path; a ColumnKey from the CEK cache brings its own loaded key,
which the cache owns. It must not keep keys, log values, or talk to a host, a key store or DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from engine.client.cek_cache import ColumnKey
from engine.client.normalization import denormalize, normalize
from engine.errors import DataError, InterfaceError, ProgrammingError
from engine.normalization_values import denormalize_values, normalize_values
from engine.types import SqlType, parse_sql_type

if TYPE_CHECKING:
    from enclave.binding import CellKey

__all__ = ["CodecKey", "decrypt_column", "decrypt_values", "encrypt_column", "encrypt_values"]

_ENCRYPTION_TYPES = {"DETERMINISTIC": True, "RANDOMIZED": False}

CodecKey = bytes | bytearray | memoryview | ColumnKey
"""A 32-byte CEK, or a ColumnKey (the CEK and, from the cache, its loaded native key)."""

# Up to this many values (and bytes), one native call on Python bytes replaces the Arrow path.
SMALL_VALUES = 16
_SMALL_BYTES = 1 << 20
_T = TypeVar("_T")


def encrypt_column(
    values: Any,
    cek: CodecKey,
    encryption_type: str,
    sql_type: str | SqlType,
    *,
    column: str | None = None,
) -> pa.Array:
    """Encrypt a column of plaintext values into AEAD_AES_256_CBC_HMAC_SHA256 cells.

    `values` is a pa.Array, pa.ChunkedArray or Python sequence of the column's type; `cek` the
    32-byte column encryption key; `encryption_type` DETERMINISTIC or RANDOMIZED (any case).
    Returns a pa.BinaryArray of cells, nulls kept null. Values that cannot be encoded raise
    DataError; a bad encryption type or key length raises ProgrammingError.

    >>> import os
    >>> cek = os.urandom(32)
    >>> cells = encrypt_column([1, 2, 3], cek, "DETERMINISTIC", "INTEGER", column="qty")
    >>> [len(cell) for cell in cells.to_pylist()]
    [65, 65, 65]
    >>> encrypt_column([2], cek, "deterministic", "INTEGER")[0] == cells[1]
    True
    >>> decrypt_column(cells, cek, "INTEGER", column="qty").to_pylist()
    [1, 2, 3]
    """
    deterministic = _is_deterministic(encryption_type)
    declared = _as_type(sql_type)
    plaintexts = normalize(values, declared, column=column)
    from enclave import binding  # the native module loads on first use, not on import

    return _with_key(
        cek, lambda key: binding.encrypt_cells(key, plaintexts, deterministic=deterministic)
    )


def encrypt_values(
    values: Sequence[object],
    cek: CodecKey,
    encryption_type: str,
    sql_type: str | SqlType,
    *,
    column: str | None = None,
) -> list[bytes | None]:
    """``encrypt_column`` for a Python list, as a list of cells (None stays None); a few values
    take one native call without Arrow, with the same cells and errors.

    >>> import os
    >>> cek = os.urandom(32)
    >>> cells = encrypt_values(["Ada", None], cek, "DETERMINISTIC", "VARCHAR")
    >>> cells[0] == encrypt_column(["Ada"], cek, "DETERMINISTIC", "VARCHAR")[0].as_py()
    True
    >>> cells[1] is None
    True
    """
    deterministic = _is_deterministic(encryption_type)
    declared = _as_type(sql_type)
    if len(values) <= SMALL_VALUES:
        plaintexts = normalize_values(values, declared)
        if plaintexts is not None and sum(len(p or b"") for p in plaintexts) <= _SMALL_BYTES:
            from enclave import binding

            return _with_key(
                cek,
                lambda key: binding.encrypt_values(key, plaintexts, deterministic=deterministic),
            )
    cells = encrypt_column(list(values), cek, encryption_type, declared, column=column)
    return cells.to_pylist()  # type: ignore[no-any-return]


def decrypt_column(
    cells: Any, cek: CodecKey, sql_type: str | SqlType, *, column: str | None = None
) -> pa.Array:
    """Verify and decrypt a column of cells back into values of `sql_type.arrow_type`.

    Any cell that is tampered with, truncated or encrypted under another key raises
    CellAuthenticationError (one fixed message). A cell that authenticates but holds bytes of
    another type raises DataError naming the column. Nulls stay null.

    >>> import os
    >>> cek = os.urandom(32)
    >>> cells = encrypt_column(["Ada", None], cek, "RANDOMIZED", "NVARCHAR(20)")
    >>> decrypt_column(cells, cek, "NVARCHAR(20)").to_pylist()
    ['Ada', None]
    """
    declared = _as_type(sql_type)
    array = _cell_array(cells, declared, column)
    if len(array) <= SMALL_VALUES:
        small = _decrypt_small(array, cek, declared)
        if small is not None:
            return small
    from enclave import binding

    plaintexts = _with_key(cek, lambda key: binding.decrypt_cells(key, array))
    return denormalize(plaintexts, declared, column=column)


def _decrypt_small(array: pa.Array, cek: CodecKey, declared: SqlType) -> pa.Array | None:
    """A few cells decrypted in one native call without Arrow, or None when a plaintext needs
    the batch path (which then gives the error). A bad cell raises here, as there."""
    values = decrypt_values(array.to_pylist(), cek, declared)
    if values is None:
        return None
    return pa.array(values, type=declared.arrow_type)


def decrypt_values(
    cells: Sequence[bytes | None], cek: CodecKey, sql_type: str | SqlType
) -> list[object] | None:
    """A few cells (at most SMALL_VALUES, None stays None) as Python values, in one native call
    without Arrow, or None when they need ``decrypt_column`` (too many or too large, or a
    plaintext the few-values path does not convert: the batch path then gives the error).
    A tampered cell raises CellAuthenticationError here, as there.

    >>> import os
    >>> cek = os.urandom(32)
    >>> decrypt_values(encrypt_values(["Zoë", None], cek, "RANDOMIZED", "VARCHAR"), cek, "VARCHAR")
    ['Zoë', None]
    """
    if len(cells) > SMALL_VALUES:
        return None
    if sum(len(cell) for cell in cells if cell is not None) > _SMALL_BYTES:
        return None
    from enclave import binding

    plaintexts = _with_key(cek, lambda key: binding.decrypt_values(key, cells))
    return denormalize_values(plaintexts, _as_type(sql_type))


def _with_key(cek: CodecKey, action: Callable[[CellKey], _T]) -> _T:
    """``action`` run with the native key of ``cek``: a ColumnKey's own (unless the cache
    wiped it meanwhile), else one loaded for this call and wiped on every exit path."""
    from enclave import binding

    native = cek.native if isinstance(cek, ColumnKey) else None
    if native is not None:
        try:
            return action(native)
        except InterfaceError:
            if not native.closed:
                raise
            # The cache dropped the key (TTL, clear) during the call: load it for this one.
    key = binding.CellKey(_key_bytes(cek.cek if isinstance(cek, ColumnKey) else cek))
    try:
        return action(key)
    finally:
        key.close()


def _is_deterministic(encryption_type: str) -> bool:
    kind = encryption_type.upper() if isinstance(encryption_type, str) else None
    if kind not in _ENCRYPTION_TYPES:
        raise ProgrammingError(
            "encryption_type must be DETERMINISTIC or RANDOMIZED (case-insensitive)"
        )
    return _ENCRYPTION_TYPES[kind]


def _key_bytes(cek: object) -> bytes:
    if not isinstance(cek, (bytes, bytearray, memoryview)):
        raise ProgrammingError(
            f"the column encryption key must be 32 bytes, not a {type(cek).__name__}"
        )
    return bytes(cek)


def _as_type(sql_type: str | SqlType) -> SqlType:
    return sql_type if isinstance(sql_type, SqlType) else parse_sql_type(sql_type)


def _cell_array(cells: Any, sql_type: SqlType, column: str | None) -> pa.Array:
    where = f"column {column} ({sql_type})" if column else f"{sql_type} cells"
    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks() if cells.num_chunks else pa.array([], type=pa.binary())
    elif not isinstance(cells, pa.Array):
        try:
            cells = pa.array(list(cells), type=pa.binary())
        except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError):
            raise DataError(f"{where}: cells must be bytes values or a binary array") from None
    if not (pa.types.is_binary(cells.type) or pa.types.is_large_binary(cells.type)):
        raise DataError(f"{where}: cells must be a binary array, not {cells.type}")
    return cells

"""The offline column codec: plaintext column values <-> Always Encrypted cells under one CEK.

It normalizes with rule v1 and calls the native codec (enclave.binding) once per column. The
native key object lives only for one call and is wiped on every exit path. It must not keep
keys, log values, or talk to a host, a key store or DuckDB.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from engine.client.normalization import denormalize, normalize
from engine.errors import DataError, ProgrammingError
from engine.types import SqlType, parse_sql_type

__all__ = ["decrypt_column", "encrypt_column"]

_ENCRYPTION_TYPES = {"DETERMINISTIC": True, "RANDOMIZED": False}


def encrypt_column(
    values: Any,
    cek: bytes,
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

    key = binding.CellKey(_key_bytes(cek))
    try:
        return binding.encrypt_cells(key, plaintexts, deterministic=deterministic)
    finally:
        key.close()


def decrypt_column(
    cells: Any, cek: bytes, sql_type: str | SqlType, *, column: str | None = None
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
    from enclave import binding

    key = binding.CellKey(_key_bytes(cek))
    try:
        plaintexts = binding.decrypt_cells(key, array)
    finally:
        key.close()
    return denormalize(plaintexts, declared, column=column)


def _is_deterministic(encryption_type: str) -> bool:
    kind = encryption_type.upper() if isinstance(encryption_type, str) else None
    if kind not in _ENCRYPTION_TYPES:
        raise ProgrammingError(
            "encryption_type must be DETERMINISTIC or RANDOMIZED (case-insensitive)"
        )
    return _ENCRYPTION_TYPES[kind]


def _key_bytes(cek: bytes) -> bytes:
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

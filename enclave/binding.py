"""The Python face of the native code: the only module that imports `enclave._native`.

It checks the ABI version at import, moves Arrow arrays into and out of the C batch calls of the
cell codec and of the enclave (sessions, query contexts, operators) without per-row Python, and
maps every native status to a PEP 249 exception. It must never put key bytes, plaintext or
ciphertext into an exception message, and never loop over rows itself, except to lay out the
few Python values of encrypt_values and decrypt_values for one batch call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

import enclave._native as _native
from engine.errors import (
    CellAuthenticationError,
    DataError,
    EnclaveSessionError,
    Error,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

__all__ = [
    "CellKey",
    "compare_and_entry",
    "stage_entries",
    "status_error",
    "encrypt_cells",
    "encrypt_cells_with_ivs",
    "decrypt_cells",
    "encrypt_values",
    "decrypt_values",
    "derive_cell_keys",
    "codec_implementation",
    "use_codec_implementation",
    "EXPECTED_ABI_VERSION",
    "EnclaveInfo",
    "enclave_info",
    "open_session",
    "close_session",
    "begin_query",
    "end_query",
    "enclave_compare",
    "enclave_filter",
    "tristate_array",
    "enclave_rank",
    "enclave_group",
    "enclave_aggregate",
    "enclave_aggregate_expression",
    "enclave_aggregate_stage",
    "enclave_reencrypt",
    "enclave_encrypt",
    "enclave_top_k",
    "OP_EQ",
    "OP_NE",
    "OP_LT",
    "OP_LE",
    "OP_GT",
    "OP_GE",
    "OP_BETWEEN",
    "OP_IN",
    "OP_LIKE",
    "OP_RANK",
    "OP_GROUP",
    "OP_SUM",
    "OP_AVG",
    "OP_MIN",
    "OP_MAX",
    "OP_COUNT_DISTINCT",
    "OP_SUM_EXPR",
    "OP_AVG_EXPR",
    "OP_REENCRYPT",
    "OP_ENCRYPT",
    "OP_TOP_K",
    "OP_REENCRYPT_TARGET",
    "TYPE_INT64",
    "TYPE_FLOAT32",
    "TYPE_FLOAT64",
    "TYPE_DECIMAL",
    "TYPE_DATE",
    "TYPE_TIME",
    "TYPE_DATETIME2",
    "TYPE_DATETIMEOFFSET",
    "TYPE_UTF8",
    "TYPE_UTF16LE",
    "TYPE_BYTES",
    "TYPE_GUID",
    "MODE_DETERMINISTIC",
    "MODE_RANDOMIZED",
]

EXPECTED_ABI_VERSION = 6

_ffi: Any = _native.ffi
_lib: Any = _native.lib

_INT32_MAX = 2**31 - 1
_CELL_OVERHEAD = 49


def _check_abi() -> None:
    version = _ffi.new("uint32_t *")
    compiled = _lib.EE_ABI_VERSION
    if _lib.ee_abi_version(version) != _lib.EE_OK or not (
        version[0] == compiled == EXPECTED_ABI_VERSION
    ):
        raise ImportError(
            f"enclave._native has ABI version {version[0]} (header {compiled}) but "
            f"enclave/binding.py expects {EXPECTED_ABI_VERSION}; rebuild with "
            "`pip install -e .` or update the binding"
        )


_check_abi()


# One fixed message per enclave status: what the enclave refused and what would fix it.
_ENCLAVE_ERRORS: dict[int, tuple[type[Error], str]] = {
    _lib.EE_ERR_SESSION: (
        EnclaveSessionError,
        "the enclave has no such session (it was closed, it expired after being idle, or the "
        "package was built for another session); reconnect to open a new enclave session",
    ),
    _lib.EE_ERR_REPLAY: (
        OperationalError,
        "the enclave refused a replayed or reordered enclave package (its counter is not above "
        "the last one accepted in this session); build a fresh package for the query",
    ),
    _lib.EE_ERR_PACKAGE: (
        OperationalError,
        "the enclave refused a malformed enclave package, or one built for a different "
        "statement; build the package for the statement the host executes",
    ),
    _lib.EE_ERR_NOT_AUTHORIZED: (
        OperationalError,
        "the enclave refused an operation the client did not authorize for this query",
    ),
    _lib.EE_ERR_QUERY: (
        OperationalError,
        "the enclave has no such query context (it ended, its session closed, or it never "
        "began); begin the query with a fresh enclave package",
    ),
    _lib.EE_ERR_LIMIT: (
        OperationalError,
        "an enclave limit was reached (sessions, open queries per session, keys, "
        "authorizations or IN list items); end unused queries or sessions, or split the work",
    ),
    _lib.EE_ERR_PLATFORM: (
        OperationalError,
        "the simulated platform key cannot be read or created; check the platform directory's "
        "permissions, or move an unreadable platform_key.pem aside",
    ),
    _lib.EE_ERR_OVERFLOW: (
        DataError,
        "an aggregate over an encrypted column is out of range for its result type "
        "(|SUM| must stay below 10**38); aggregate fewer rows or use a wider type",
    ),
    _lib.EE_ERR_TYPE: (
        NotSupportedError,
        "the enclave has no such operator for this column type (for example LIKE on a "
        "number, or SUM on a string)",
    ),
}


def _raise_for(status: int, action: str) -> None:
    """Turns a native status into the matching PEP 249 exception (no values in messages)."""
    if status != _lib.EE_OK:
        raise status_error(status, action)


def status_error(status: int, action: str) -> Error:
    """The PEP 249 exception for a failed native status (``action`` says what failed).

    >>> type(status_error(1, "comparing encrypted cells")).__name__
    'CellAuthenticationError'
    """
    if status == _lib.EE_ERR_AUTH:
        return CellAuthenticationError()
    if status in _ENCLAVE_ERRORS:
        kind, message = _ENCLAVE_ERRORS[status]
        return kind(f"{action}: {message}")
    if status == _lib.EE_ERR_KEY_ID:
        return InterfaceError(f"{action}: the CellKey is closed; load the key again")
    if status == _lib.EE_ERR_KEY_LENGTH:
        return ProgrammingError(f"{action}: a column encryption key must be exactly 32 bytes")
    if status == _lib.EE_ERR_ARGUMENT:
        return ProgrammingError(f"{action}: the native codec rejected a malformed argument")
    if status == _lib.EE_ERR_KEY_TABLE_FULL:
        return OperationalError(
            f"{action}: every native key slot is in use; close CellKey objects no longer needed"
        )
    if status == _lib.EE_ERR_UNSUPPORTED:
        return NotSupportedError(
            f"{action}: this CPU lacks AES-NI or SHA-NI; use the 'portable' implementation"
        )
    if status == _lib.EE_ERR_RANDOM:
        return OperationalError(f"{action}: the OpenSSL random generator failed")
    if status == _lib.EE_ERR_CAPACITY:
        return InternalError(f"{action}: the binding sized an output buffer too small (a bug)")
    return InternalError(f"{action}: the native codec failed with status {status}")


if os.environ.get("ENCLAVESQL_CODEC") == "portable":
    _raise_for(_lib.ee_cell_select_impl(_lib.EE_IMPL_PORTABLE), "selecting the codec")


def _root_key_bytes(root_key: object) -> bytes:
    """A copy of a 32-byte root key, or ProgrammingError saying what is wrong with it."""
    if not isinstance(root_key, bytes | bytearray | memoryview):
        raise ProgrammingError(
            f"a column encryption key must be bytes, not {type(root_key).__name__}"
        )
    key_bytes = bytes(root_key)
    if len(key_bytes) != 32:
        raise ProgrammingError(
            f"a column encryption key must be exactly 32 bytes, got {len(key_bytes)}"
        )
    return key_bytes


class CellKey:
    """A 32-byte column encryption key loaded into native memory.

    The derived enc/mac/iv keys, the AES key schedules and the HMAC inner/outer states are
    precomputed once. The key lives in a native slot named by an integer id and is wiped on
    close(); using a closed key raises InterfaceError.

    >>> with CellKey(bytes(range(32))) as key:
    ...     key.closed
    False
    >>> key.closed
    True
    """

    __slots__ = ("_id",)

    def __init__(self, root_key: bytes) -> None:
        self._id = 0
        key_bytes = _root_key_bytes(root_key)
        key_id = _ffi.new("uint64_t *")
        _raise_for(_lib.ee_key_load(key_id, key_bytes, len(key_bytes)), "loading a key")
        self._id = int(key_id[0])

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._id == 0

    def close(self) -> None:
        """Wipes and frees the native key slot. Calling it again does nothing."""
        key_id, self._id = self._id, 0
        if key_id:
            # A failure here means the slot is already gone; there is nothing left to wipe.
            _lib.ee_key_free(key_id)

    def _require_id(self) -> int:
        if self._id == 0:
            raise InterfaceError("this CellKey is closed; load the key again")
        return self._id

    def __enter__(self) -> CellKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CellKey {'closed' if self.closed else 'open'}>"


class _Rows:
    """An Arrow binary or large_binary array seen as the C batch layout (int32 offsets)."""

    def __init__(self, array: Any, what: str) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if not isinstance(array, pa.Array):
            raise ProgrammingError(f"{what} must be a pyarrow binary array, not {type(array)}")
        kind = array.type
        width: Any
        if kind == pa.binary():
            width = np.int32
        elif kind == pa.large_binary():
            width = np.int64
        else:
            raise ProgrammingError(f"{what} must be binary or large_binary, not {kind}")
        self.array = array
        self.count = len(array)
        buffers = array.buffers()
        offsets_buffer, data_buffer = buffers[1], buffers[2]
        if self.count == 0 or offsets_buffer is None:
            offsets = np.zeros(self.count + 1, dtype=width)
        else:
            offsets = np.frombuffer(offsets_buffer, dtype=width)[
                array.offset : array.offset + self.count + 1
            ]
        self.data_start = 0
        if width is np.int64:
            # Rebase so the slice starts at 0; the C layout takes int32 offsets.
            start, end = int(offsets[0]), int(offsets[-1])
            if end - start > _INT32_MAX:
                raise NotSupportedError(
                    f"{what} holds more than 2 GiB of bytes in one array; split it into batches"
                )
            self.data_start = start
            offsets = (offsets - start).astype(np.int32)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int32)
        self.data = data_buffer
        self.null_count = array.null_count
        self.validity = buffers[0] if self.null_count > 0 else None
        self.bit_offset = array.offset

    def valid_mask(self) -> Any:
        if self.validity is None:
            return np.ones(self.count, dtype=bool)
        return np.asarray(self.array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)

    def lengths(self) -> Any:
        return np.diff(self.offsets).astype(np.int64)

    def c_args(self) -> tuple[Any, ...]:
        """(offsets, offsets_len, data, data_len, validity, validity_len, bit_offset, count)."""
        offsets = _ffi.from_buffer("int32_t[]", self.offsets)
        if self.data is None or self.data.size - self.data_start <= 0:
            data, data_len = _ffi.NULL, 0
        else:
            data = _ffi.from_buffer("uint8_t[]", self.data) + self.data_start
            data_len = self.data.size - self.data_start
        if self.validity is None:
            validity, validity_len = _ffi.NULL, 0
        else:
            validity = _ffi.from_buffer("uint8_t[]", self.validity)
            validity_len = self.validity.size
        return (
            offsets,
            self.count + 1,
            data,
            data_len,
            validity,
            validity_len,
            self.bit_offset,
            self.count,
        )

    def result_validity(self) -> Any:
        """A validity buffer for an offset-0 result with the same null positions."""
        if self.validity is None:
            return None
        if self.bit_offset == 0:
            return self.validity
        return pa.py_buffer(np.packbits(self.valid_mask(), bitorder="little"))


class _Output:
    """Room for one native batch result: `capacity` bytes and `count + 1` int64 offsets.

    Every batch call that writes cells opens with the same five arguments (out, out_cap,
    *out_len, out_offsets, out_offsets_cap); this class owns them so each call site does not.
    """

    def __init__(self, capacity: int, count: int) -> None:
        self.capacity = capacity
        self.count = count
        self.data: Any = np.empty(max(capacity, 1), dtype=np.uint8)
        self.offsets: Any = np.zeros(count + 1, dtype=np.int64)
        self._len = _ffi.new("size_t *")

    def c_args(self) -> tuple[Any, ...]:
        """(out, out_cap, out_len, out_offsets, out_offsets_cap) for the native call."""
        return (
            _ffi.from_buffer("uint8_t[]", self.data, require_writable=True),
            self.capacity,
            self._len,
            _ffi.from_buffer("int64_t[]", self.offsets, require_writable=True),
            self.count + 1,
        )

    @property
    def used(self) -> int:
        """The bytes the native call wrote (valid once it returned EE_OK)."""
        return int(self._len[0])


def _validity_of(nulls: Any) -> tuple[Any, int]:
    """(Arrow validity buffer or None when nothing is null, null count) for a boolean mask."""
    null_count = int(nulls.sum())
    if null_count == 0:
        return None, 0
    return pa.py_buffer(np.packbits(~nulls, bitorder="little")), null_count


def _build_result(rows: _Rows, out: _Output) -> Any:
    """A binary array over the native output (large_binary only past 2 GiB)."""
    used = out.used
    if used <= _INT32_MAX:
        kind, offsets = pa.binary(), out.offsets.astype(np.int32)
    else:
        kind, offsets = pa.large_binary(), out.offsets
    return pa.Array.from_buffers(
        kind,
        rows.count,
        [rows.result_validity(), pa.py_buffer(offsets), pa.py_buffer(out.data[:used])],
        null_count=rows.null_count,
    )


def _encrypt(key: CellKey, plaintexts: Any, mode: int, ivs: bytes | None) -> Any:
    key_id = key._require_id()
    rows = _Rows(plaintexts, "plaintexts")
    valid = rows.valid_mask()
    cell_lengths = _CELL_OVERHEAD + 16 * (rows.lengths() // 16 + 1)
    total = int(cell_lengths[valid].sum())
    if ivs is not None and len(ivs) != 16 * int(valid.sum()):
        raise ProgrammingError(
            f"ivs must hold 16 bytes per non-null row ({16 * int(valid.sum())} bytes), "
            f"got {len(ivs)}"
        )
    out = _Output(total, rows.count)
    status = _lib.ee_cell_encrypt_batch(
        *out.c_args(),
        key_id,
        mode,
        *rows.c_args(),
        _ffi.NULL if ivs is None else ivs,
        0 if ivs is None else len(ivs),
    )
    _raise_for(status, "encrypting cells")
    return _build_result(rows, out)


def encrypt_cells(key: CellKey, plaintexts: Any, *, deterministic: bool) -> Any:
    """Encrypts a binary array into AEAD_AES_256_CBC_HMAC_SHA256 cells; nulls stay null.

    >>> with CellKey(bytes(32)) as key:
    ...     cells = encrypt_cells(key, pa.array([b"abc", None]), deterministic=True)
    ...     [None if c is None else len(c) for c in cells.to_pylist()]
    [65, None]
    """
    mode = _lib.EE_CELL_DETERMINISTIC if deterministic else _lib.EE_CELL_RANDOMIZED
    return _encrypt(key, plaintexts, mode, None)


def encrypt_cells_with_ivs(key: CellKey, plaintexts: Any, ivs: bytes) -> Any:
    """Encrypts with explicit IVs, 16 bytes per non-null row in order. For vectors and tests.

    >>> with CellKey(bytes(32)) as key:
    ...     cells = encrypt_cells_with_ivs(key, pa.array([b"x"]), bytes(16))
    ...     cells[0].as_py()[33:49] == bytes(16)
    True
    """
    if not isinstance(ivs, bytes | bytearray | memoryview):
        raise ProgrammingError(f"ivs must be bytes, not {type(ivs).__name__}")
    return _encrypt(key, plaintexts, _lib.EE_CELL_GIVEN_IV, bytes(ivs))


def decrypt_cells(key: CellKey, cells: Any) -> Any:
    """Verifies each cell's MAC in constant time, then decrypts; nulls stay null.

    Any bad cell raises CellAuthenticationError with its one fixed message.

    >>> with CellKey(bytes(32)) as key:
    ...     cells = encrypt_cells(key, pa.array([b"abc", None, b""]), deterministic=False)
    ...     decrypt_cells(key, cells).to_pylist()
    [b'abc', None, b'']
    """
    key_id = key._require_id()
    rows = _Rows(cells, "cells")
    valid = rows.valid_mask()
    bound = int(np.maximum(rows.lengths() - _CELL_OVERHEAD, 0)[valid].sum())
    out = _Output(bound, rows.count)
    failed_row = _ffi.new("size_t *")
    status = _lib.ee_cell_decrypt_batch(
        *out.c_args(),
        failed_row,
        key_id,
        *rows.c_args(),
    )
    # The failing row index stays internal: a message naming it would help an attacker probe.
    _raise_for(status, "decrypting cells")
    return _build_result(rows, out)


def _values_layout(values: Sequence[bytes]) -> tuple[Any, int, Any, int]:
    """(offsets, offsets_len, data, data_len) of the C batch layout for Python bytes values."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    if offsets[-1] > _INT32_MAX:
        raise NotSupportedError("the values hold more than 2 GiB; use the batch functions")
    data = b"".join(values)
    return _ffi.new("int32_t[]", offsets), len(offsets), data or _ffi.NULL, len(data)


def _split_output(
    out: Any, out_offsets: Any, values: Sequence[bytes | None], count: int
) -> list[bytes | None]:
    """The native output of the non-null values, put back in place among the Nones."""
    ends = _ffi.unpack(out_offsets, count + 1)
    raw = _ffi.buffer(out, ends[-1])[:]
    produced = iter([raw[ends[i] : ends[i + 1]] for i in range(count)])
    return [None if value is None else next(produced) for value in values]


def encrypt_values(
    key: CellKey, plaintexts: Sequence[bytes | None], *, deterministic: bool
) -> list[bytes | None]:
    """``encrypt_cells`` for a few Python bytes values (None stays None), in one native call
    without Arrow or numpy: the same cells, for the one or two values of a statement.

    >>> with CellKey(bytes(32)) as key:
    ...     cells = encrypt_values(key, [b"abc", None], deterministic=True)
    ...     cells[0] == encrypt_cells(key, pa.array([b"abc"]), deterministic=True)[0].as_py()
    True
    """
    key_id = key._require_id()
    present = [value for value in plaintexts if value is not None]
    count = len(present)
    if count == 0:
        return [None] * len(plaintexts)
    capacity = sum(_CELL_OVERHEAD + 16 * (len(value) // 16 + 1) for value in present)
    out = _ffi.new("uint8_t[]", capacity)
    out_len = _ffi.new("size_t *")
    out_offsets = _ffi.new("int64_t[]", count + 1)
    mode = _lib.EE_CELL_DETERMINISTIC if deterministic else _lib.EE_CELL_RANDOMIZED
    status = _lib.ee_cell_encrypt_batch(
        out,
        capacity,
        out_len,
        out_offsets,
        count + 1,
        key_id,
        mode,
        *_values_layout(present),
        _ffi.NULL,
        0,
        0,
        count,
        _ffi.NULL,
        0,
    )
    _raise_for(status, "encrypting cells")
    return _split_output(out, out_offsets, plaintexts, count)


def decrypt_values(key: CellKey, cells: Sequence[bytes | None]) -> list[bytes | None]:
    """``decrypt_cells`` for a few Python bytes values (None stays None), in one native call
    without Arrow or numpy. Any bad cell raises CellAuthenticationError, as there.

    >>> with CellKey(bytes(32)) as key:
    ...     decrypt_values(key, encrypt_values(key, [b"abc", None], deterministic=False))
    [b'abc', None]
    """
    key_id = key._require_id()
    present = [cell for cell in cells if cell is not None]
    count = len(present)
    if count == 0:
        return [None] * len(cells)
    capacity = sum(max(len(cell) - _CELL_OVERHEAD, 0) for cell in present)
    out = _ffi.new("uint8_t[]", max(capacity, 1))
    out_len = _ffi.new("size_t *")
    out_offsets = _ffi.new("int64_t[]", count + 1)
    failed_row = _ffi.new("size_t *")
    status = _lib.ee_cell_decrypt_batch(
        out,
        capacity,
        out_len,
        out_offsets,
        count + 1,
        failed_row,
        key_id,
        *_values_layout(present),
        _ffi.NULL,
        0,
        0,
        count,
    )
    # The failing row index stays internal, as in decrypt_cells.
    _raise_for(status, "decrypting cells")
    return _split_output(out, out_offsets, cells, count)


def derive_cell_keys(root_key: bytes) -> tuple[bytes, bytes, bytes]:
    """The (enc_key, mac_key, iv_key) of spec 1.1 for a 32-byte root key.

    >>> [len(k) for k in derive_cell_keys(bytes(32))]
    [32, 32, 32]
    """
    key_bytes = _root_key_bytes(root_key)
    out = _ffi.new("uint8_t[96]")
    out_len = _ffi.new("size_t *")
    _raise_for(_lib.ee_key_derive(out, 96, out_len, key_bytes, 32), "deriving cell keys")
    derived = bytes(_ffi.buffer(out, 96))
    return derived[:32], derived[32:64], derived[64:]


def codec_implementation() -> str:
    """The codec in use: "aesni-shani" (fast path) or "openssl" (portable).

    >>> codec_implementation() in ("aesni-shani", "openssl")
    True
    """
    impl = _ffi.new("int32_t *")
    _raise_for(_lib.ee_cell_current_impl(impl), "reading the codec")
    return "aesni-shani" if impl[0] == _lib.EE_IMPL_FAST else "openssl"


def use_codec_implementation(name: str) -> None:
    """Selects "fast", "portable" or "auto" for the whole process.

    "fast" on a CPU without AES-NI and SHA-NI raises NotSupportedError.

    >>> before = codec_implementation()
    >>> use_codec_implementation("portable"); codec_implementation()
    'openssl'
    >>> use_codec_implementation("fast" if before == "aesni-shani" else "portable")
    """
    choices = {
        "fast": _lib.EE_IMPL_FAST,
        "portable": _lib.EE_IMPL_PORTABLE,
        "auto": _lib.EE_IMPL_AUTO,
    }
    if name not in choices:
        raise ProgrammingError(
            f"unknown codec implementation {name!r}; use 'fast', 'portable' or 'auto'"
        )
    _raise_for(_lib.ee_cell_select_impl(choices[name]), "selecting the codec")


# ---- The enclave: sessions, query contexts and operators (enclave.h section 5) -----------------

OP_EQ: int = _lib.EE_OP_EQ
OP_NE: int = _lib.EE_OP_NE
OP_LT: int = _lib.EE_OP_LT
OP_LE: int = _lib.EE_OP_LE
OP_GT: int = _lib.EE_OP_GT
OP_GE: int = _lib.EE_OP_GE
OP_BETWEEN: int = _lib.EE_OP_BETWEEN
OP_IN: int = _lib.EE_OP_IN
OP_LIKE: int = _lib.EE_OP_LIKE
OP_RANK: int = _lib.EE_OP_RANK
OP_GROUP: int = _lib.EE_OP_GROUP
OP_SUM: int = _lib.EE_OP_SUM
OP_AVG: int = _lib.EE_OP_AVG
OP_MIN: int = _lib.EE_OP_MIN
OP_MAX: int = _lib.EE_OP_MAX
OP_COUNT_DISTINCT: int = _lib.EE_OP_COUNT_DISTINCT
OP_SUM_EXPR: int = _lib.EE_OP_SUM_EXPR
OP_AVG_EXPR: int = _lib.EE_OP_AVG_EXPR
OP_REENCRYPT: int = _lib.EE_OP_REENCRYPT
OP_ENCRYPT: int = _lib.EE_OP_ENCRYPT
OP_TOP_K: int = _lib.EE_OP_TOP_K
# Authorization-only: a package entry for the target key of REENCRYPT, never a call's operator.
OP_REENCRYPT_TARGET: int = _lib.EE_OP_REENCRYPT_TARGET

TYPE_INT64: int = _lib.EE_TYPE_INT64
TYPE_FLOAT32: int = _lib.EE_TYPE_FLOAT32
TYPE_FLOAT64: int = _lib.EE_TYPE_FLOAT64
TYPE_DECIMAL: int = _lib.EE_TYPE_DECIMAL
TYPE_DATE: int = _lib.EE_TYPE_DATE
TYPE_TIME: int = _lib.EE_TYPE_TIME
TYPE_DATETIME2: int = _lib.EE_TYPE_DATETIME2
TYPE_DATETIMEOFFSET: int = _lib.EE_TYPE_DATETIMEOFFSET
TYPE_UTF8: int = _lib.EE_TYPE_UTF8
TYPE_UTF16LE: int = _lib.EE_TYPE_UTF16LE
TYPE_BYTES: int = _lib.EE_TYPE_BYTES
TYPE_GUID: int = _lib.EE_TYPE_GUID

MODE_DETERMINISTIC = 1
MODE_RANDOMIZED = 2

_U16_MAX = 0xFFFF
_U64_MAX = 2**64 - 1
_EVIDENCE_MAX_LEN: int = _lib.EE_EVIDENCE_MAX_LEN
_NO_ROWS = (_ffi.NULL, 0, _ffi.NULL, 0, _ffi.NULL, 0, 0, 0)


@dataclass(frozen=True)
class EnclaveInfo:
    """What the enclave reports about itself: the facts an attestation policy appraises.

    `measurement` is the SHA-256 of the loaded extension module's file, `svn` the compiled-in
    security version, `debug` whether this is a debug build.
    """

    measurement: bytes
    svn: int
    debug: bool


def enclave_info() -> EnclaveInfo:
    """The measurement, security version and debug flag of the loaded enclave.

    >>> info = enclave_info()
    >>> len(info.measurement), info.svn >= 1, info.debug
    (32, True, False)
    """
    measurement = _ffi.new("uint8_t[32]")
    svn = _ffi.new("uint32_t *")
    debug = _ffi.new("int32_t *")
    _raise_for(_lib.ee_enclave_info(measurement, svn, debug), "reading the enclave's identity")
    return EnclaveInfo(bytes(_ffi.buffer(measurement, 32)), int(svn[0]), bool(debug[0]))


def _bytes_arg(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProgrammingError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _id_arg(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ProgrammingError(f"{what} must be an integer from 0 to 2**64 - 1")
    return value


def _small_arg(value: object, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ProgrammingError(f"{what} must be an integer from 0 to {maximum}")
    return value


def open_session(
    nonce: bytes, client_ecdh_public: bytes, platform_dir: str | os.PathLike[str]
) -> tuple[int, bytes]:
    """Opens an enclave session; returns (session_id, evidence format v2).

    The enclave derives the session key from `client_ecdh_public` (97-byte uncompressed P-384
    point) at once; the client derives the same key after verifying the evidence.

    >>> import tempfile
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> from cryptography.hazmat.primitives import serialization
    >>> client = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
    ...     serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    >>> with tempfile.TemporaryDirectory() as platform:
    ...     session_id, evidence = open_session(bytes(16), client, platform)
    ...     close_session(session_id)
    >>> evidence[:4]
    b'EEV2'
    """
    nonce_bytes = _bytes_arg(nonce, "the nonce")
    point = _bytes_arg(client_ecdh_public, "the client ECDH public key")
    directory = os.fsencode(os.fspath(platform_dir))
    if not 16 <= len(nonce_bytes) <= 256:
        raise ProgrammingError(f"the nonce must be 16 to 256 bytes, got {len(nonce_bytes)}")
    if len(point) != 97 or point[:1] != b"\x04":
        raise ProgrammingError(
            "the client ECDH public key must be a 97-byte uncompressed P-384 point"
        )
    evidence = _ffi.new(f"uint8_t[{_EVIDENCE_MAX_LEN}]")
    evidence_len = _ffi.new("size_t *")
    session_id = _ffi.new("uint64_t *")
    status = _lib.ee_enclave_open_session(
        evidence,
        _EVIDENCE_MAX_LEN,
        evidence_len,
        session_id,
        nonce_bytes,
        len(nonce_bytes),
        point,
        len(point),
        directory,
        len(directory),
    )
    if status == _lib.EE_ERR_ARGUMENT:
        raise ProgrammingError(
            "opening an enclave session: the client ECDH public key is not a point on P-384, "
            "or the platform directory name is unusable"
        )
    _raise_for(status, "opening an enclave session")
    return int(session_id[0]), bytes(_ffi.buffer(evidence, evidence_len[0]))


def close_session(session_id: int) -> None:
    """Wipes the session key and every query context of the session.

    >>> close_session(12345)
    Traceback (most recent call last):
    ...
    engine.errors.EnclaveSessionError: closing an enclave session: the enclave has no such session \
(it was closed, it expired after being idle, or the package was built for another session); \
reconnect to open a new enclave session
    """
    _raise_for(
        _lib.ee_enclave_close_session(_id_arg(session_id, "the session id")),
        "closing an enclave session",
    )


def begin_query(session_id: int, package: bytes, statement_hash: bytes) -> int:
    """Verifies an enclave package and opens a query context; returns the query id.

    `statement_hash` is SHA-256(UTF-16LE(statement text)) of what the host executes.

    >>> begin_query(12345, bytes(8), bytes(32))
    Traceback (most recent call last):
    ...
    engine.errors.EnclaveSessionError: beginning an enclave query: the enclave has no such session \
(it was closed, it expired after being idle, or the package was built for another session); \
reconnect to open a new enclave session
    """
    sid = _id_arg(session_id, "the session id")
    package_bytes = _bytes_arg(package, "the enclave package")
    digest = _bytes_arg(statement_hash, "the statement hash")
    if len(digest) != 32:
        raise ProgrammingError("the statement hash must be a 32-byte SHA-256 digest")
    query_id = _ffi.new("uint64_t *")
    status = _lib.ee_enclave_begin_query(
        query_id, sid, package_bytes, len(package_bytes), digest, len(digest)
    )
    _raise_for(status, "beginning an enclave query")
    return int(query_id[0])


def end_query(query_id: int) -> None:
    """Wipes and frees a query context (its keys and authorizations).

    >>> end_query(12345)
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: ending an enclave query: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    _raise_for(
        _lib.ee_enclave_end_query(_id_arg(query_id, "the query id")), "ending an enclave query"
    )


def _operator_args(query_id: int, cek_id: int, type_code: int, operator: int) -> tuple[int, ...]:
    return (
        _id_arg(query_id, "the query id"),
        _small_arg(cek_id, "the cek_id", _U16_MAX),
        _small_arg(type_code, "the type code", 2**31 - 1),
        _small_arg(operator, "the operator", 2**31 - 1),
    )


def enclave_compare(
    query_id: int,
    cek_id: int,
    type_code: int,
    operator: int,
    constant: bytes,
    cells: Any,
    right: Any | None = None,
) -> Any:
    """EQ..GE, BETWEEN, IN or LIKE over encrypted cells: a BooleanArray, null where a cell is.

    `constant` is the operator's constant blob (engine.client.enclave_package builds them); an
    empty constant with `right` compares two columns row by row.

    >>> enclave_compare(1, 1, TYPE_INT64, OP_EQ, b"", pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: comparing encrypted cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    args = _operator_args(query_id, cek_id, type_code, operator)
    blob = _bytes_arg(constant, "the operator constant")
    rows = _Rows(cells, "cells")
    right_args = _NO_ROWS
    if right is not None:
        right_rows = _Rows(right, "right")
        if right_rows.count != rows.count:
            raise ProgrammingError(
                f"a column comparison needs equally long inputs ({rows.count} and "
                f"{right_rows.count} rows)"
            )
        right_args = right_rows.c_args()
    out = np.empty(max(rows.count, 1), dtype=np.uint8)
    status = _lib.ee_enclave_compare(
        _ffi.from_buffer("uint8_t[]", out, require_writable=True),
        rows.count,
        *args,
        blob,
        len(blob),
        *rows.c_args(),
        *right_args,
    )
    _raise_for(status, "comparing encrypted cells")
    result = out[: rows.count]
    nulls = result == 2
    validity, null_count = _validity_of(nulls)
    values = pa.py_buffer(np.packbits(result == 1, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), rows.count, [validity, values], null_count=null_count)


def _cell_args(array: Any, what: str) -> tuple[Any, ...]:
    """The eight C row arguments of a binary array, pointing into Arrow's own buffers.

    This is the per-vector path of the enclave UDFs, so a plain ``pa.binary()`` array is read
    without copies or numpy views (the buffer addresses go straight to C, which checks every
    offset against the lengths given); anything else goes through _Rows.
    """
    if type(array) is not pa.BinaryArray:
        return _Rows(array, what).c_args()
    count = len(array)
    validity, offsets, data = array.buffers()
    if offsets is None:
        return _Rows(array, what).c_args()
    start = array.offset
    if validity is None or array.null_count == 0:
        bitmap, bitmap_len = _ffi.NULL, 0
    else:
        bitmap, bitmap_len = _ffi.cast("uint8_t *", validity.address), validity.size
    return (
        _ffi.cast("int32_t *", offsets.address + 4 * start),
        count + 1 if offsets.size >= 4 * (start + count + 1) else 0,
        _ffi.NULL if data is None else _ffi.cast("uint8_t *", data.address),
        0 if data is None else data.size,
        bitmap,
        bitmap_len,
        start,
        count,
    )


def enclave_filter(
    query_id: int, predicates: Sequence[tuple[int, int, int, bytes]], columns: Sequence[Any]
) -> Any:
    """SQL's AND of enclave predicates over one set of rows: a BooleanArray (null = unknown).

    predicates[i] is (cek_id, type_code, operator, constant) for EQ..GE, BETWEEN, IN or LIKE
    with a constant, applied to columns[i] (binary cell arrays of one length). Each predicate
    is authorized on its own, as by enclave_compare; a row is evaluated only while it is not
    yet FALSE, so a later predicate's cell of such a row is never read (docs/enclave.md).

    >>> enclave_filter(1, [(1, TYPE_INT64, OP_EQ, b"")], [pa.array([b""], pa.binary())])
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: comparing encrypted cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    if not predicates or len(predicates) != len(columns):
        raise ProgrammingError("enclave_filter needs one cell column per predicate (at least one)")
    query = _id_arg(query_id, "the query id")
    count = len(columns[0])
    state = bytearray(b"\x01") * count  # EE_TRUE: the identity of AND
    state_ptr = _ffi.from_buffer("uint8_t[]", state, require_writable=True)
    for (cek_id, type_code, operator, constant), cells in zip(predicates, columns, strict=True):
        rows = _cell_args(cells, "cells")
        blob = _bytes_arg(constant, "the operator constant")
        if rows[-1] != count:
            raise ProgrammingError(
                f"a conjunction needs equally long columns ({count} and {rows[-1]} rows)"
            )
        status = _lib.ee_enclave_compare_and(
            state_ptr,
            count,
            query,
            _small_arg(cek_id, "the cek_id", _U16_MAX),
            _small_arg(type_code, "the type code", 2**31 - 1),
            _small_arg(operator, "the operator", 2**31 - 1),
            blob,
            len(blob),
            *rows,
            *_NO_ROWS,
        )
        _raise_for(status, "comparing encrypted cells")
    return tristate_array(state)


def tristate_array(state: bytes | bytearray) -> Any:
    """A BooleanArray from EE_TRUE (1) / EE_FALSE (0) / EE_NULL (2) bytes, packed in C.

    >>> tristate_array(bytes([1, 0, 2, 1])).to_pylist()
    [True, False, None, True]
    """
    count = len(state)
    width = (count + 7) // 8
    values, validity = bytearray(width), bytearray(width)
    null_count = _ffi.new("size_t *")
    _raise_for(
        _lib.ee_tristate_pack(
            _ffi.from_buffer("uint8_t[]", values, require_writable=True),
            width,
            _ffi.from_buffer("uint8_t[]", validity, require_writable=True),
            width,
            null_count,
            _ffi.from_buffer("uint8_t[]", state),
            count,
        ),
        "packing the enclave's answer",
    )
    nulls = int(null_count[0])
    return pa.Array.from_buffers(
        pa.bool_(),
        count,
        [pa.py_buffer(validity) if nulls else None, pa.py_buffer(values)],
        null_count=nulls,
    )


def _ranks(query_id: int, cek_id: int, type_code: int, operator: int, cells: Any) -> Any:
    args = _operator_args(query_id, cek_id, type_code, operator)
    rows = _Rows(cells, "cells")
    out = np.empty(max(rows.count, 1), dtype=np.int64)
    status = _lib.ee_enclave_rank(
        _ffi.from_buffer("int64_t[]", out, require_writable=True),
        rows.count,
        *args,
        b"",
        0,
        *rows.c_args(),
    )
    _raise_for(status, "ranking encrypted cells")
    result = out[: rows.count]
    return pa.array(result, type=pa.int64(), mask=result < 0)


def enclave_rank(query_id: int, cek_id: int, type_code: int, cells: Any) -> Any:
    """Dense ranks (ascending from 0) of encrypted values; null cells get null.

    >>> enclave_rank(1, 1, TYPE_INT64, pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: ranking encrypted cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    return _ranks(query_id, cek_id, type_code, OP_RANK, cells)


def enclave_group(query_id: int, cek_id: int, type_code: int, cells: Any) -> Any:
    """Group ids: equal values get equal ids (ascending from 0); null cells get null.

    For an equi-join, pass both sides' cells concatenated and join on the ids.

    >>> enclave_group(1, 1, TYPE_INT64, pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: ranking encrypted cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    return _ranks(query_id, cek_id, type_code, OP_GROUP, cells)


def _group_id_vector(group_ids: Any, count: int) -> Any:
    if isinstance(group_ids, pa.ChunkedArray):
        group_ids = group_ids.combine_chunks()
    if isinstance(group_ids, pa.Array):
        if not pa.types.is_integer(group_ids.type):
            raise ProgrammingError(f"group ids must be integers, not {group_ids.type}")
        group_ids = group_ids.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    vector = np.ascontiguousarray(np.asarray(group_ids), dtype=np.int64)
    if vector.ndim != 1 or len(vector) != count:
        raise ProgrammingError(f"group ids must be one per row ({count}), got {len(vector)}")
    return vector


def _cells_result(out: _Output) -> Any:
    """A binary array over native output in which an empty entry means null."""
    lengths = np.diff(out.offsets)
    nulls = lengths == 0
    validity, null_count = _validity_of(nulls)
    return pa.Array.from_buffers(
        pa.binary(),
        out.count,
        [validity, pa.py_buffer(out.offsets.astype(np.int32)), pa.py_buffer(out.data[: out.used])],
        null_count=null_count,
    )


def enclave_aggregate(
    query_id: int,
    cek_id: int,
    type_code: int,
    operator: int,
    cells: Any,
    group_ids: Any,
    group_count: int,
    decimal_scale: int = 0,
) -> Any:
    """SUM, AVG, MIN, MAX or COUNT_DISTINCT per group: one fresh randomized cell per group.

    `group_ids` gives each row's group (null or -1: skip the row). A group with no value gets
    null (COUNT_DISTINCT: an encrypted 0). Overflow raises DataError.

    >>> enclave_aggregate(1, 1, TYPE_INT64, OP_SUM, pa.array([], pa.binary()), [], 0)
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: aggregating encrypted cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    args = _operator_args(query_id, cek_id, type_code, operator)
    rows = _Rows(cells, "cells")
    groups = _small_arg(group_count, "group_count", _INT32_MAX)
    scale = _small_arg(decimal_scale, "decimal_scale", 38)
    ids = _group_id_vector(group_ids, rows.count)
    lengths = rows.lengths()[rows.valid_mask()]
    longest = max(17, int(lengths.max()) - _CELL_OVERHEAD if len(lengths) else 17)
    cell_len = _CELL_OVERHEAD + 16 * (longest // 16 + 1)
    out = _Output(groups * cell_len, groups)
    status = _lib.ee_enclave_aggregate(
        *out.c_args(),
        *args,
        b"",
        0,
        *rows.c_args(),
        _ffi.from_buffer("int64_t[]", ids),
        len(ids),
        groups,
        scale,
    )
    _raise_for(status, "aggregating encrypted cells")
    return _cells_result(out)


def enclave_aggregate_expression(
    query_id: int,
    cek_id: int,
    type_code: int,
    operator: int,
    program: bytes,
    slots: Sequence[Any],
    group_ids: Any,
    group_count: int,
) -> Any:
    """SUM_EXPR or AVG_EXPR: SUM or AVG per group of the arithmetic expression `program`
    (docs/enclave.md) over `slots`, one fresh randomized cell per group under `cek_id`.

    `slots` holds one binary array per program slot, all as long as `group_ids`: cells for an
    encrypted slot, normalized plaintexts for a plain one. A row with a NULL in any slot has a
    NULL expression. Overflow raises DataError; a malformed program OperationalError.

    >>> enclave_aggregate_expression(1, 1, TYPE_DECIMAL, OP_SUM_EXPR, b"\\x01",
    ...                              [pa.array([], pa.binary())], [], 0)
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: aggregating an expression over encrypted cells: the enclave \
has no such query context (it ended, its session closed, or it never began); begin the query \
with a fresh enclave package
    """
    args = _operator_args(query_id, cek_id, type_code, operator)
    blob = _bytes_arg(program, "the expression program")
    groups = _small_arg(group_count, "group_count", _INT32_MAX)
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in slots]
    if not arrays:
        raise ProgrammingError("an expression aggregate needs at least one slot")
    row_count = len(arrays[0])
    if any(len(a) != row_count for a in arrays):
        raise ProgrammingError("every slot of an expression aggregate needs one entry per row")
    # Slot-major: entry s * rows + r is slot s of row r, so each slot stays one Arrow run.
    rows = _Rows(pa.concat_arrays([a.cast(pa.binary()) for a in arrays]), "slots")
    ids = _group_id_vector(group_ids, row_count)
    cell_len = _CELL_OVERHEAD + 32  # a 17-byte DECIMAL result is the longest (8 for FLOAT64)
    out = _Output(groups * cell_len, groups)
    status = _lib.ee_enclave_aggregate_expression(
        *out.c_args(),
        *args,
        blob,
        len(blob),
        *rows.c_args(),
        _ffi.from_buffer("int64_t[]", ids),
        len(ids),
        groups,
    )
    _raise_for(status, "aggregating an expression over encrypted cells")
    return _cells_result(out)


def enclave_aggregate_stage(
    query_id: int,
    layout: bytes,
    slots: Sequence[Any],
    group_ids: Any,
    group_count: int,
    output_count: int,
) -> list[Any]:
    """Every SUM, AVG, SUM_EXPR and AVG_EXPR of one stage in one call (enclave.h 5d): each
    stage slot is decrypted once for all the outputs that read it, and each output is
    authorized as its own call would be. Returns one binary array per output (one fresh
    randomized cell per group, null for an empty group), in the layout's order.

    `layout` is the 5d layout (docs/enclave.md); `slots` holds one binary array per stage
    slot, all as long as `group_ids`: cells, or the normalized plaintexts of a program's plain
    slot. Overflow raises DataError; a malformed program OperationalError.

    >>> enclave_aggregate_stage(1, bytes([1, 1, 1, OP_SUM, TYPE_INT64, 1, 0, 0, 0, 0, 0]),
    ...                         [pa.array([], pa.binary())], [], 0, 1)
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: aggregating a stage of encrypted cells: the enclave has no \
such query context (it ended, its session closed, or it never began); begin the query with a \
fresh enclave package
    """
    query = _id_arg(query_id, "query_id")
    blob = _bytes_arg(layout, "the stage layout")
    groups = _small_arg(group_count, "group_count", _INT32_MAX)
    outputs = _small_arg(output_count, "output_count", _lib.EE_STAGE_MAX_OUTPUTS)
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in slots]
    if not arrays:
        raise ProgrammingError("a stage aggregate needs at least one slot")
    row_count = len(arrays[0])
    if any(len(a) != row_count for a in arrays):
        raise ProgrammingError("every slot of a stage aggregate needs one entry per row")
    # Slot-major, as for an expression aggregate: each slot stays one Arrow run. One slot is
    # passed as it is (concatenating would copy every cell once more).
    binary = [a.cast(pa.binary()) for a in arrays]
    rows = _Rows(binary[0] if len(binary) == 1 else pa.concat_arrays(binary), "slots")
    ids = _group_id_vector(group_ids, row_count)
    cell_len = _CELL_OVERHEAD + 32  # a 17-byte DECIMAL result is the longest (8 for FLOAT64)
    out = _Output(outputs * groups * cell_len, outputs * groups)
    status = _lib.ee_enclave_aggregate_stage(
        *out.c_args(),
        query,
        blob,
        len(blob),
        *rows.c_args(),
        _ffi.from_buffer("int64_t[]", ids),
        len(ids),
        groups,
    )
    _raise_for(status, "aggregating a stage of encrypted cells")
    cells = _cells_result(out)
    return [cells.slice(o * groups, groups) for o in range(outputs)]


def _transform(
    query_id: int,
    cek_id: int,
    type_code: int,
    operator: int,
    constant: bytes,
    rows: _Rows,
    capacity: int,
    action: str,
) -> Any:
    args = _operator_args(query_id, cek_id, type_code, operator)
    blob = _bytes_arg(constant, "the operator constant")
    out = _Output(capacity, rows.count)
    status = _lib.ee_enclave_transform(
        *out.c_args(),
        *args,
        blob,
        len(blob),
        *rows.c_args(),
    )
    _raise_for(status, action)
    return _build_result(rows, out)


def enclave_reencrypt(
    query_id: int, cek_id: int, type_code: int, constant: bytes, cells: Any
) -> Any:
    """Re-encrypts cells under another key of the same query (constant: target cek_id, mode).

    The package must also hold the target's own entry (target, OP_REENCRYPT_TARGET, type,
    source cek_id || mode); an ENCRYPT grant on the target does not count.

    >>> enclave_reencrypt(1, 1, TYPE_INT64, b"\\x02\\x00\\x02", pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: re-encrypting cells: the enclave has no such query \
context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    rows = _Rows(cells, "cells")
    capacity = int(rows.lengths()[rows.valid_mask()].sum())
    return _transform(
        query_id,
        cek_id,
        type_code,
        OP_REENCRYPT,
        constant,
        rows,
        capacity,
        "re-encrypting cells",
    )


def enclave_encrypt(
    query_id: int, cek_id: int, type_code: int, constant: bytes, plaintexts: Any
) -> Any:
    """Encrypts normalized plaintexts in the enclave (in-place encryption of a column).

    >>> enclave_encrypt(1, 1, TYPE_INT64, b"", pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: encrypting cells in the enclave: the enclave has no such \
query context (it ended, its session closed, or it never began); begin the query with a fresh \
enclave package
    """
    rows = _Rows(plaintexts, "plaintexts")
    lengths = rows.lengths()[rows.valid_mask()]
    capacity = int((_CELL_OVERHEAD + 16 * (lengths // 16 + 1)).sum())
    return _transform(
        query_id,
        cek_id,
        type_code,
        OP_ENCRYPT,
        constant,
        rows,
        capacity,
        "encrypting cells in the enclave",
    )


def enclave_top_k(query_id: int, cek_id: int, type_code: int, constant: bytes, cells: Any) -> Any:
    """The first k rows of an ORDER BY over encrypted cells (EE_OP_TOP_K), as an Int64Array.

    `constant` is u64 LE k || u8 descending || u8 nulls first (the client authorized exactly
    it). A selected row gets its dense rank among the selected values (ascending with the
    value, whatever the direction), a selected NULL cell gets null, any other row -1.

    >>> enclave_top_k(1, 1, TYPE_INT64, bytes(10), pa.array([], pa.binary()))
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: selecting the first rows of encrypted cells: the enclave \
has no such query context (it ended, its session closed, or it never began); begin the query \
with a fresh enclave package
    """
    args = _operator_args(query_id, cek_id, type_code, OP_TOP_K)
    blob = _bytes_arg(constant, "the operator constant")
    rows = _Rows(cells, "cells")
    out = np.empty(max(rows.count, 1), dtype=np.int64)
    status = _lib.ee_enclave_top_k(
        _ffi.from_buffer("int64_t[]", out, require_writable=True),
        rows.count,
        *args,
        blob,
        len(blob),
        *rows.c_args(),
    )
    _raise_for(status, "selecting the first rows of encrypted cells")
    result = out[: rows.count]
    return pa.array(result, type=pa.int64(), mask=result == -2)


def compare_and_entry() -> tuple[int, int]:
    """(EE_ABI_VERSION, address of ee_enclave_compare_and_views) in the enclave library this
    process loaded: what enclave/duckdb_extension.py hands the native DuckDB predicates, so that
    they call into this copy of the enclave (its sessions) instead of loading a second one, and
    pass DuckDB's string vectors as they are (16-byte string views).

    >>> version, address = compare_and_entry()
    >>> version == EXPECTED_ABI_VERSION and address > 0
    True
    """
    entry = _ffi.addressof(_lib, "ee_enclave_compare_and_views")
    return int(_lib.EE_ABI_VERSION), int(_ffi.cast("uintptr_t", entry))


def stage_entries() -> tuple[int, int, int]:
    """(EE_ABI_VERSION, address of ee_enclave_stage_accumulate, of ee_enclave_stage_finish) in
    this process's enclave library: what the native DuckDB stage aggregates call (enclave.h 5e).

    >>> version, accumulate, finish = stage_entries()
    >>> version == EXPECTED_ABI_VERSION and accumulate > 0 and finish > 0
    True
    """
    addresses = [
        int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, name)))
        for name in ("ee_enclave_stage_accumulate", "ee_enclave_stage_finish")
    ]
    return int(_lib.EE_ABI_VERSION), addresses[0], addresses[1]

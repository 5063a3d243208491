"""The Python face of the native cell codec: the only module that imports `enclave._native`.

It checks the ABI version at import, moves Arrow binary arrays into and out of the C batch calls
without per-row Python, and maps every native status to a PEP 249 exception. It must never put
key bytes, plaintext or ciphertext into an exception message, and never loop over rows itself.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

import enclave._native as _native
from engine.errors import (
    CellAuthenticationError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

__all__ = [
    "CellKey",
    "encrypt_cells",
    "encrypt_cells_with_ivs",
    "decrypt_cells",
    "derive_cell_keys",
    "codec_implementation",
    "use_codec_implementation",
    "EXPECTED_ABI_VERSION",
]

EXPECTED_ABI_VERSION = 1

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


def _raise_for(status: int, action: str) -> None:
    """Turns a native status into the matching PEP 249 exception (no values in messages)."""
    if status == _lib.EE_OK:
        return
    if status == _lib.EE_ERR_AUTH:
        raise CellAuthenticationError()
    if status == _lib.EE_ERR_KEY_ID:
        raise InterfaceError(f"{action}: the CellKey is closed; load the key again")
    if status == _lib.EE_ERR_KEY_LENGTH:
        raise ProgrammingError(f"{action}: a column encryption key must be exactly 32 bytes")
    if status == _lib.EE_ERR_ARGUMENT:
        raise ProgrammingError(f"{action}: the native codec rejected a malformed argument")
    if status == _lib.EE_ERR_KEY_TABLE_FULL:
        raise OperationalError(
            f"{action}: every native key slot is in use; close CellKey objects no longer needed"
        )
    if status == _lib.EE_ERR_UNSUPPORTED:
        raise NotSupportedError(
            f"{action}: this CPU lacks AES-NI or SHA-NI; use the 'portable' implementation"
        )
    if status == _lib.EE_ERR_RANDOM:
        raise OperationalError(f"{action}: the OpenSSL random generator failed")
    if status == _lib.EE_ERR_CAPACITY:
        raise InternalError(f"{action}: the binding sized an output buffer too small (a bug)")
    raise InternalError(f"{action}: the native codec failed with status {status}")


if os.environ.get("ENCLAVESQL_CODEC") == "portable":
    _raise_for(_lib.ee_cell_select_impl(_lib.EE_IMPL_PORTABLE), "selecting the codec")


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
        if not isinstance(root_key, bytes | bytearray | memoryview):
            raise ProgrammingError(
                f"a column encryption key must be bytes, not {type(root_key).__name__}"
            )
        key_bytes = bytes(root_key)
        if len(key_bytes) != 32:
            raise ProgrammingError(
                f"a column encryption key must be exactly 32 bytes, got {len(key_bytes)}"
            )
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


def _build_result(rows: _Rows, out_data: Any, out_offsets: Any, used: int) -> Any:
    """A binary array over the native output (large_binary only past 2 GiB)."""
    if used <= _INT32_MAX:
        kind, offsets = pa.binary(), out_offsets.astype(np.int32)
    else:
        kind, offsets = pa.large_binary(), out_offsets
    return pa.Array.from_buffers(
        kind,
        rows.count,
        [rows.result_validity(), pa.py_buffer(offsets), pa.py_buffer(out_data[:used])],
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
    out_data = np.empty(max(total, 1), dtype=np.uint8)
    out_offsets = np.empty(rows.count + 1, dtype=np.int64)
    out_len = _ffi.new("size_t *")
    status = _lib.ee_cell_encrypt_batch(
        _ffi.from_buffer("uint8_t[]", out_data, require_writable=True),
        total,
        out_len,
        _ffi.from_buffer("int64_t[]", out_offsets, require_writable=True),
        rows.count + 1,
        key_id,
        mode,
        *rows.c_args(),
        _ffi.NULL if ivs is None else ivs,
        0 if ivs is None else len(ivs),
    )
    _raise_for(status, "encrypting cells")
    return _build_result(rows, out_data, out_offsets, int(out_len[0]))


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
    out_data = np.empty(max(bound, 1), dtype=np.uint8)
    out_offsets = np.empty(rows.count + 1, dtype=np.int64)
    out_len = _ffi.new("size_t *")
    failed_row = _ffi.new("size_t *")
    status = _lib.ee_cell_decrypt_batch(
        _ffi.from_buffer("uint8_t[]", out_data, require_writable=True),
        bound,
        out_len,
        _ffi.from_buffer("int64_t[]", out_offsets, require_writable=True),
        rows.count + 1,
        failed_row,
        key_id,
        *rows.c_args(),
    )
    # The failing row index stays internal: a message naming it would help an attacker probe.
    _raise_for(status, "decrypting cells")
    return _build_result(rows, out_data, out_offsets, int(out_len[0]))


def derive_cell_keys(root_key: bytes) -> tuple[bytes, bytes, bytes]:
    """The (enc_key, mac_key, iv_key) of spec 1.1 for a 32-byte root key.

    >>> [len(k) for k in derive_cell_keys(bytes(32))]
    [32, 32, 32]
    """
    if not isinstance(root_key, bytes | bytearray | memoryview):
        raise ProgrammingError(
            f"a column encryption key must be bytes, not {type(root_key).__name__}"
        )
    key_bytes = bytes(root_key)
    if len(key_bytes) != 32:
        raise ProgrammingError(
            f"a column encryption key must be exactly 32 bytes, got {len(key_bytes)}"
        )
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

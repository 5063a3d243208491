"""Loads the native enclave-predicate extension (enclavesql_udfs.duckdb_extension) into DuckDB.

The file is built by ``python -m enclave.build_duckdb_extension``. Before DuckDB loads it, this
module opens the same file through cffi and hands it the enclave's
``ee_enclave_compare_and_views``, ``ee_enclave_stage_accumulate`` and ``ee_enclave_stage_finish``
from the already loaded enclave library, so both share one set of enclave sessions. It also
mirrors the host's constant table into the extension and reads back a failed query's status
(and whether a comparison or an aggregate failed).
It must not load anything but that one file, and never passes key or plaintext bytes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import cffi

from engine.errors import Error, InternalError, OperationalError
from engine.predicate_program import MALFORMED_PROGRAM

__all__ = [
    "EXTENSION_PATH",
    "available",
    "drop_constant",
    "load_into",
    "put_constant",
    "take_failure",
]

EXTENSION_PATH = Path(__file__).resolve().parent / "enclavesql_udfs.duckdb_extension"
# The cffi-level ABI of the file (EE_DUCKDB_ABI in enclavesql_udfs.c).
_ABI = 5
# Set ENCLAVESQL_NATIVE_UDFS=0 to keep the Python UDFs (a fallback, and how tests cover both).
_SWITCH = "ENCLAVESQL_NATIVE_UDFS"

_CDEF = """
uint32_t ee_duckdb_abi(void);
int ee_duckdb_bind(uint32_t enclave_abi, void *compare_and_views);
int ee_duckdb_put_constant(uint64_t ref, const uint8_t *blob, size_t len);
void ee_duckdb_drop_constant(uint64_t ref);
int32_t ee_duckdb_take_failure(uint64_t query_id);
int ee_duckdb_bind_stage(uint32_t enclave_abi, void *accumulate, void *finish);
int32_t ee_duckdb_take_failure_of(uint64_t query_id, int32_t *kind);
"""

_lock = threading.Lock()
_state: dict[str, Any] = {"library": None, "ffi": None, "failed": False}


def available() -> bool:
    """Whether DuckDB connections should load the extension: the file is built, the switch is
    not off, and it binds to the enclave library of this process."""
    if os.environ.get(_SWITCH, "1") == "0" or not EXTENSION_PATH.is_file():
        return False
    return _library() is not None


def _library() -> Any | None:
    with _lock:
        if _state["library"] is not None or _state["failed"]:
            return _state["library"]
        try:
            from enclave.binding import compare_and_entry, stage_entries

            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            library = ffi.dlopen(str(EXTENSION_PATH))
            if library.ee_duckdb_abi() != _ABI:
                raise OSError("stale build")
            abi, address = compare_and_entry()
            if library.ee_duckdb_bind(abi, ffi.cast("void *", address)) != 0:
                raise OSError("built against another enclave ABI")
            abi, accumulate, finish = stage_entries()
            if library.ee_duckdb_bind_stage(
                abi, ffi.cast("void *", accumulate), ffi.cast("void *", finish)
            ):
                raise OSError("built against another enclave ABI")
        except (ImportError, OSError, AttributeError):
            _state["failed"] = True
            return None
        _state["library"] = library
        _state["ffi"] = ffi
        return library


def load_into(connection: Any) -> bool:
    """LOAD the extension into ``connection``'s database (opened with unsigned extensions
    allowed); False when it is not available here."""
    if not available():
        return False
    path = str(EXTENSION_PATH).replace("'", "''")
    connection.execute(f"LOAD '{path}'")
    return True


def put_constant(ref: int, blob: bytes) -> None:
    """Mirror one entry of the host's constant table (ref -> ciphertext blob) into C."""
    library = _state["library"]
    if library is not None and library.ee_duckdb_put_constant(ref, blob, len(blob)) != 0:
        raise OperationalError("out of memory while binding an enclave predicate's constant")


def drop_constant(ref: int) -> None:
    """Forget one mirrored constant (the host evicted it)."""
    library = _state["library"]
    if library is not None:
        library.ee_duckdb_drop_constant(ref)


def take_failure(query_id: int) -> Error | None:
    """The PEP 249 error behind the first failed native call of ``query_id``, if one failed."""
    library = _state["library"]
    if library is None:
        return None
    kind = _state["ffi"].new("int32_t *")
    status = int(library.ee_duckdb_take_failure_of(query_id, kind))
    if status == 0:
        return None
    what = "aggregating encrypted cells" if kind[0] == 1 else "comparing encrypted cells"
    if status == -1:
        return InternalError(
            "an enclave predicate's constant is no longer in the host's table (more than 4096 "
            "other constants were bound while the statement ran); run it again"
        )
    if status == -2:
        return OperationalError("the native enclave predicates ran out of memory")
    if status == -3:
        return InternalError(MALFORMED_PROGRAM)
    from enclave.binding import status_error

    return status_error(status, what)

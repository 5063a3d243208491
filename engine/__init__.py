"""EnclaveSQL's DB-API 2.0 module surface (PEP 249): globals, exceptions and public entry points.

It re-exports; it holds no logic of its own and must not import DuckDB at module import time.
"""

from __future__ import annotations

from engine.dbapi_types import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)
from engine.errors import (
    AttestationError,
    CellAuthenticationError,
    DatabaseError,
    DataError,
    EnclaveSessionError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"

__all__ = [
    "apilevel",
    "threadsafety",
    "paramstyle",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "AttestationError",
    "EnclaveSessionError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "CellAuthenticationError",
    "STRING",
    "BINARY",
    "NUMBER",
    "DATETIME",
    "ROWID",
    "Date",
    "Time",
    "Timestamp",
    "Binary",
    "DateFromTicks",
    "TimeFromTicks",
    "TimestampFromTicks",
]

# The column codec pulls in pyarrow and numpy, and connect pulls in DuckDB, so they load on first
# use, not with `import engine`.
_LAZY_EXPORTS = {
    "connect": "engine.connection",
    "Connection": "engine.connection",
    "Cursor": "engine.cursor",
    "encrypt_column": "engine.client.codec",
    "decrypt_column": "engine.client.codec",
    "Encrypted": "engine.client.forced_encryption",
    "parse_sql_type": "engine.types",
    "SqlType": "engine.types",
}
__all__ += list(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")

"""EnclaveSQL's DB-API 2.0 module surface (PEP 249): globals, exceptions and public entry points.

It re-exports; it holds no logic of its own and must not import DuckDB at module import time.
"""

from __future__ import annotations

from engine.errors import (
    AttestationError,
    CellAuthenticationError,
    DatabaseError,
    DataError,
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
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "CellAuthenticationError",
]

# The column codec pulls in pyarrow and numpy, so it loads on first use, not with `import engine`.
_LAZY_EXPORTS = {
    "encrypt_column": "engine.client.codec",
    "decrypt_column": "engine.client.codec",
    "parse_sql_type": "engine.types",
    "SqlType": "engine.types",
}
__all__ += list(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")

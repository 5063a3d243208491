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

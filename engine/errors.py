"""The PEP 249 exception tree of EnclaveSQL; a leaf module that imports nothing of ours.

    Warning
    Error
    ├── InterfaceError            our objects misused (closed cursor or connection)
    └── DatabaseError
        ├── DataError             a value that cannot be encoded for its column type; overflow
        ├── OperationalError      enclave, attestation, session, key or key store unavailable
        │   ├── AttestationError  one attestation check failed (the message names which)
        │   └── EnclaveSessionError  the enclave no longer knows the session (closed, or expired)
        ├── IntegrityError        relational constraints only
        ├── InternalError         a native status that means our own bug
        ├── ProgrammingError      SQL syntax, unknown names, wrong parameter count, or an
        │                         operation that another column declaration would allow
        ├── NotSupportedError     no declaration could make the operation work
        └── CellAuthenticationError  a tampered, truncated or wrong-key cell or envelope

Messages never carry key bytes, plaintext or ciphertext; table and column names are fine.
Every exception pickles and unpickles to an equal message, so it can cross a process boundary.
"""

from __future__ import annotations

__all__ = [
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
]


class Warning(Exception):  # noqa: A001 - the name is fixed by PEP 249
    """Important warnings, such as data truncation (PEP 249)."""


class Error(Exception):
    """Base class of every EnclaveSQL error (PEP 249)."""


class InterfaceError(Error):
    """The DB-API objects were misused, for example a closed cursor or connection."""


class DatabaseError(Error):
    """An error related to the database, the enclave or the keys."""


class DataError(DatabaseError):
    """A value cannot be encoded for its column type, or an aggregate overflowed."""


class OperationalError(DatabaseError):
    """The enclave, attestation, a session, a key or a key store is unavailable."""


class AttestationError(OperationalError):
    """One attestation check failed; the message names the check."""


class EnclaveSessionError(OperationalError):
    """The enclave no longer knows the session: it was closed, or expired after being idle for
    longer than the enclave's bound. A connection opens a new session and retries once."""


class IntegrityError(DatabaseError):
    """A relational constraint was violated."""


class InternalError(DatabaseError):
    """A native status that means a bug in EnclaveSQL itself."""


class ProgrammingError(DatabaseError):
    """Bad SQL, unknown names, a wrong parameter count, or an operation that another
    column declaration would allow."""


class NotSupportedError(DatabaseError):
    """No column declaration could make the requested operation work."""


class CellAuthenticationError(DatabaseError):
    """A cell or key envelope failed authentication: tampered, truncated or wrong key.

    There is one fixed message whatever the cause, so the error is no oracle.
    """

    MESSAGE = (
        "cell authentication failed: the value was tampered with, truncated, "
        "or encrypted under a different key"
    )

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.MESSAGE)

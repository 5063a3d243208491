"""Maps DuckDB's exceptions onto EnclaveSQL's PEP 249 classes, keeping DuckDB's message.

When a statement carried ciphertext, quoted values in the message are masked, because DuckDB
echoes offending values (a duplicate key, a failed cast). It must not decide whether to raise.
"""

from __future__ import annotations

import re

import duckdb

from engine import errors

__all__ = ["map_duckdb_error", "redact_quoted"]

# Most specific first: DuckDB's classes mirror PEP 249, with its own subclasses underneath.
_MAPPING: tuple[tuple[type[BaseException], type[errors.Error]], ...] = (
    (duckdb.DataError, errors.DataError),
    (duckdb.IntegrityError, errors.IntegrityError),
    (duckdb.NotSupportedError, errors.NotSupportedError),
    (duckdb.InternalError, errors.InternalError),
    (duckdb.ProgrammingError, errors.ProgrammingError),
    (duckdb.OperationalError, errors.OperationalError),
    (duckdb.DatabaseError, errors.DatabaseError),
    (duckdb.Error, errors.DatabaseError),
)

_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def redact_quoted(message: str) -> str:
    """Mask every quoted value in a message.

    >>> redact_quoted('Duplicate key "ssn: \\\\x01\\\\xFF" violates primary key constraint')
    'Duplicate key "<value>" violates primary key constraint'
    >>> redact_quoted("Could not convert string 'x' to INT32")
    "Could not convert string '<value>' to INT32"
    """

    def mask(match: re.Match[str]) -> str:
        quote = match.group(0)[0]
        return f"{quote}<value>{quote}"

    return _QUOTED.sub(mask, message)


def map_duckdb_error(error: BaseException, *, redact: bool) -> errors.Error:
    """The EnclaveSQL exception for a DuckDB exception; ``redact`` masks quoted values.

    >>> mapped = map_duckdb_error(duckdb.ConversionException("bad 'x'"), redact=True)
    >>> type(mapped).__name__, str(mapped)
    ('DataError', "bad '<value>'")
    """
    message = str(error)
    if redact:
        message = redact_quoted(message)
    for duck_class, ours in _MAPPING:
        if isinstance(error, duck_class):
            return ours(message)
    return errors.DatabaseError(message)

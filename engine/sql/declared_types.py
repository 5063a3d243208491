"""The one place where the SQL layer interprets a declared type of an encrypted column.

It checks, through engine.types (the authority on which types can be encrypted), that a type
can be encrypted and returns its canonical spelling. It must not decide how values are encoded;
that is the normalization module's job.
"""

from __future__ import annotations

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.dialect import canonical_type_text
from engine.types import parse_sql_type

__all__ = ["encryptable_type"]


def encryptable_type(column: str, declared: str) -> str:
    """The canonical declared type, or NotSupportedError when it cannot be encrypted.

    >>> encryptable_type("t.c", "varchar (20)")
    'VARCHAR(20)'
    >>> encryptable_type("t.c", "xml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.NotSupportedError: t.c: ...
    """
    try:
        parsed = parse_sql_type(canonical_type_text(declared))
    except (NotSupportedError, ProgrammingError) as error:
        # Keep engine.types' class (unsupported vs malformed) and name the column.
        raise type(error)(f"{column}: {error}") from None
    return parsed.canonical

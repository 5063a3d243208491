"""The one place where the SQL layer interprets a declared type of an encrypted column.

It checks that a type can be encrypted and returns its canonical spelling. When engine.types
(parse_sql_type) is present it is the authority; until then a small list of base names stands
in. It must not decide how values are encoded; that is engine.types' job on the client.
"""

from __future__ import annotations

import re
from typing import Any

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.dialect import canonical_type_text

__all__ = ["encryptable_type"]

try:  # engine.types is written in parallel; fall back to the list below until it lands.
    from engine import types as _types
except ImportError:  # pragma: no cover - depends on the checkout
    _types: Any = None  # type: ignore[no-redef]

# SQL Server's Always Encrypted supports these base types (plus DuckDB spellings); it refuses
# text, ntext, image, xml, sql_variant, rowversion, geography and friends.
_FALLBACK_BASE_NAMES = frozenset(
    {
        "BIT", "BOOLEAN", "BOOL", "TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT",
        "REAL", "FLOAT", "DOUBLE", "DECIMAL", "NUMERIC", "MONEY", "SMALLMONEY",
        "DATE", "TIME", "DATETIME", "DATETIME2", "SMALLDATETIME", "DATETIMEOFFSET", "TIMESTAMP",
        "CHAR", "VARCHAR", "NCHAR", "NVARCHAR", "BINARY", "VARBINARY", "UNIQUEIDENTIFIER", "UUID",
    }
)  # fmt: skip


def encryptable_type(column: str, declared: str) -> str:
    """The canonical declared type, or NotSupportedError when it cannot be encrypted.

    >>> encryptable_type("t.c", "varchar (20)")
    'VARCHAR(20)'
    >>> encryptable_type("t.c", "xml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.NotSupportedError: t.c: ...
    """
    canonical = canonical_type_text(declared)
    if _types is not None and hasattr(_types, "parse_sql_type"):
        try:
            parsed = _types.parse_sql_type(canonical)
        except (NotSupportedError, ProgrammingError) as error:
            # Keep engine.types' class (unsupported vs malformed) and name the column.
            raise type(error)(f"{column}: {error}") from None
        return str(getattr(parsed, "canonical", None) or getattr(parsed, "name", canonical))
    base = re.split(r"[(\s]", canonical, maxsplit=1)[0]
    if base not in _FALLBACK_BASE_NAMES:
        supported = ", ".join(sorted(_FALLBACK_BASE_NAMES))
        raise NotSupportedError(
            f"{column}: type {canonical} cannot be encrypted; supported types: {supported}"
        )
    return canonical

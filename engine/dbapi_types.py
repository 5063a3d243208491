"""PEP 249 type objects and constructors: STRING, BINARY, NUMBER, DATETIME, ROWID, and Date,
Time, Timestamp, Binary and their FromTicks forms.

A type object compares equal to the type codes in ``Cursor.description``, which are DuckDB or
declared SQL type names such as ``'INTEGER'`` or ``'VARCHAR(11)'``. It holds no logic beyond that.
"""

from __future__ import annotations

import datetime
import time

__all__ = [
    "BINARY",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "DBAPITypeObject",
    "Date",
    "DateFromTicks",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
]


def _base_name(type_code: str) -> str:
    # 'VARCHAR(11)' -> 'VARCHAR', 'TIMESTAMP WITH TIME ZONE' stays whole.
    return type_code.split("(", 1)[0].strip().upper()


class DBAPITypeObject:
    """Equal to every type code whose base name is in its set.

    >>> NUMBER == "DECIMAL(10,2)", STRING == "NVARCHAR(20)", "BLOB" == BINARY
    (True, True, True)
    >>> DATETIME == "INTEGER"
    False
    """

    def __init__(self, *names: str) -> None:
        self.names = frozenset(name.upper() for name in names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self.names == other.names
        if isinstance(other, str):
            return _base_name(other) in self.names
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"DBAPITypeObject({', '.join(sorted(self.names))})"


STRING = DBAPITypeObject("VARCHAR", "CHAR", "NVARCHAR", "NCHAR", "TEXT", "STRING", "UUID")
BINARY = DBAPITypeObject("BLOB", "BYTEA", "BINARY", "VARBINARY", "BITSTRING", "BIT")
NUMBER = DBAPITypeObject(
    "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "REAL", "FLOAT", "DOUBLE", "DECIMAL", "NUMERIC",
    "BOOLEAN",
)  # fmt: skip
DATETIME = DBAPITypeObject(
    "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S",
    "TIMESTAMP_MS", "TIMESTAMP_NS", "TIME WITH TIME ZONE", "INTERVAL",
)  # fmt: skip
ROWID = DBAPITypeObject("ROWID")

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime


def Binary(value: bytes | bytearray | memoryview | str) -> bytes:  # noqa: N802 - PEP 249 name
    """A value for a BLOB column.

    >>> Binary("ab"), Binary(bytearray(b"\\x00"))
    (b'ab', b'\\x00')
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    """The local date of a POSIX timestamp.

    >>> DateFromTicks(0) == datetime.date(*time.localtime(0)[:3])
    True
    """
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802 - PEP 249 name
    """The local time of day of a POSIX timestamp.

    >>> TimeFromTicks(0) == datetime.time(*time.localtime(0)[3:6])
    True
    """
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802 - PEP 249 name
    """The local date and time of a POSIX timestamp.

    >>> TimestampFromTicks(0) == datetime.datetime(*time.localtime(0)[:6])
    True
    """
    return Timestamp(*time.localtime(ticks)[:6])

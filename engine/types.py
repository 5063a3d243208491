"""Declared SQL types of encrypted columns: parsing, canonical names, Arrow and DuckDB types.

A neutral leaf module shared by the client, the host and the SQL layer. It knows only type names
and their properties; it must not import anything of theirs, touch values, or do any crypto.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

import pyarrow as pa

from engine.errors import NotSupportedError, ProgrammingError

__all__ = [
    "NormalizationForm",
    "SqlType",
    "TypeCategory",
    "parse_sql_type",
    "supported_type_names",
]


class TypeCategory(enum.Enum):
    """The broad family of a type, for classifiers that decide which operations are possible."""

    INTEGER = "integer"
    BOOLEAN = "boolean"
    FLOATING = "floating"
    DECIMAL = "decimal"
    STRING = "string"
    BINARY = "binary"
    TEMPORAL = "temporal"
    UUID = "uuid"


class NormalizationForm(enum.Enum):
    """The plaintext byte layout of normalization rule version 1 (spec section 3)."""

    INT64 = "int64"  # 8-byte LE signed; bit and every integer width
    FLOAT32 = "float32"  # 4-byte IEEE-754 LE (SQL Server real)
    FLOAT64 = "float64"  # 8-byte IEEE-754 LE (SQL Server float)
    DECIMAL = "decimal"  # sign byte + 16-byte LE magnitude written; any length >= 1 read
    DATE = "date"  # 3-byte LE days since 0001-01-01
    TIME = "time"  # 5-byte LE 100 ns ticks since midnight
    DATETIME2 = "datetime2"  # time(5) || date(3)
    DATETIMEOFFSET = "datetimeoffset"  # UTC time(5) || UTC date(3) || int16 LE offset minutes
    UTF8 = "utf8"  # UTF-8 bytes, not padded (SQL Server _UTF8 collations)
    UTF16LE = "utf16le"  # UTF-16LE code units, not padded (nchar, nvarchar)
    BYTES = "bytes"  # raw bytes, not padded
    GUID = "guid"  # 16 bytes in .NET Guid.ToByteArray() order


@dataclass(frozen=True)
class _Family:
    duckdb: str
    category: TypeCategory
    form: NormalizationForm
    # Which parameters the declaration takes: "decimal" (p,s), "fraction" (n), "length" (n|MAX).
    parameters: str | None = None


_FAMILIES: dict[str, _Family] = {
    "BOOLEAN": _Family("BOOLEAN", TypeCategory.BOOLEAN, NormalizationForm.INT64),
    "TINYINT": _Family("TINYINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "SMALLINT": _Family("SMALLINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "INTEGER": _Family("INTEGER", TypeCategory.INTEGER, NormalizationForm.INT64),
    "BIGINT": _Family("BIGINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "UTINYINT": _Family("UTINYINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "USMALLINT": _Family("USMALLINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "UINTEGER": _Family("UINTEGER", TypeCategory.INTEGER, NormalizationForm.INT64),
    "UBIGINT": _Family("UBIGINT", TypeCategory.INTEGER, NormalizationForm.INT64),
    "REAL": _Family("FLOAT", TypeCategory.FLOATING, NormalizationForm.FLOAT32),
    "DOUBLE": _Family("DOUBLE", TypeCategory.FLOATING, NormalizationForm.FLOAT64),
    "DECIMAL": _Family("DECIMAL", TypeCategory.DECIMAL, NormalizationForm.DECIMAL, "decimal"),
    "DATE": _Family("DATE", TypeCategory.TEMPORAL, NormalizationForm.DATE),
    "TIME": _Family("TIME", TypeCategory.TEMPORAL, NormalizationForm.TIME, "fraction"),
    "TIMESTAMP": _Family(
        "TIMESTAMP", TypeCategory.TEMPORAL, NormalizationForm.DATETIME2, "fraction"
    ),
    "TIMESTAMPTZ": _Family(
        "TIMESTAMP WITH TIME ZONE",
        TypeCategory.TEMPORAL,
        NormalizationForm.DATETIMEOFFSET,
        "fraction",
    ),
    "VARCHAR": _Family("VARCHAR", TypeCategory.STRING, NormalizationForm.UTF8, "length"),
    "NVARCHAR": _Family("VARCHAR", TypeCategory.STRING, NormalizationForm.UTF16LE, "length"),
    "BLOB": _Family("BLOB", TypeCategory.BINARY, NormalizationForm.BYTES, "length"),
    "UUID": _Family("UUID", TypeCategory.UUID, NormalizationForm.GUID),
}

# Every spelling we accept, DuckDB's and T-SQL's, mapped to its canonical family name. FLOAT is
# DuckDB's 4-byte float (T-SQL's FLOAT is 8 bytes: declare DOUBLE for that), and BIT is T-SQL's
# bit (DuckDB's BIT is a bit string, which is not offered).
_ALIASES: dict[str, str] = {
    **{name: name for name in _FAMILIES},
    "BOOL": "BOOLEAN",
    "BIT": "BOOLEAN",
    "LOGICAL": "BOOLEAN",
    "INT1": "TINYINT",
    "INT2": "SMALLINT",
    "SHORT": "SMALLINT",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "SIGNED": "INTEGER",
    "INT8": "BIGINT",
    "LONG": "BIGINT",
    "UINT8": "UTINYINT",
    "UINT16": "USMALLINT",
    "UINT32": "UINTEGER",
    "UINT64": "UBIGINT",
    "FLOAT4": "REAL",
    "FLOAT": "REAL",
    "FLOAT8": "DOUBLE",
    "DOUBLE PRECISION": "DOUBLE",
    "NUMERIC": "DECIMAL",
    "DEC": "DECIMAL",
    "DATETIME": "TIMESTAMP",
    "DATETIME2": "TIMESTAMP",
    "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "DATETIMEOFFSET": "TIMESTAMPTZ",
    "CHAR": "VARCHAR",
    "BPCHAR": "VARCHAR",
    "TEXT": "VARCHAR",
    "STRING": "VARCHAR",
    "CHARACTER": "VARCHAR",
    "CHARACTER VARYING": "VARCHAR",
    "NCHAR": "NVARCHAR",
    "BYTEA": "BLOB",
    "BINARY": "BLOB",
    "VARBINARY": "BLOB",
    "UNIQUEIDENTIFIER": "UUID",
}

_DECIMAL_MAX_PRECISION = 38
_DECIMAL_DEFAULT = (18, 3)  # DuckDB's DECIMAL without parameters
_FRACTION_DEFAULT = 7  # T-SQL's default fractional-second scale of time, datetime2, datetimeoffset

_INTEGER_ARROW: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
}


def supported_type_names() -> tuple[str, ...]:
    """Every accepted spelling, sorted, for error messages and documentation.

    >>> "NVARCHAR" in supported_type_names() and "UNIQUEIDENTIFIER" in supported_type_names()
    True
    """
    return tuple(sorted(_ALIASES))


@dataclass(frozen=True)
class SqlType:
    """The declared type of an encrypted column, in canonical form.

    `name` is the canonical family name (see `supported_type_names()` for the spellings that map
    to it). `precision` and `scale` are set for DECIMAL; `scale` is the fractional-second digits
    (0-7) of TIME, TIMESTAMP and TIMESTAMPTZ; `length` is the declared length of VARCHAR,
    NVARCHAR and BLOB, kept for display and T-SQL export but not enforced (as in DuckDB).

    >>> t = SqlType("DECIMAL", precision=10, scale=2)
    >>> str(t), t.duckdb_type, t.arrow_type
    ('DECIMAL(10,2)', 'DECIMAL(10,2)', Decimal128Type(decimal128(10, 2)))
    """

    name: str
    precision: int | None = None
    scale: int | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        family = _FAMILIES.get(self.name)
        if family is None:
            raise NotSupportedError(_unsupported_message(self.name))
        kind = family.parameters
        if kind == "decimal":
            if self.precision is None or self.scale is None:
                raise ProgrammingError("DECIMAL needs both a precision and a scale")
            if not 1 <= self.precision <= _DECIMAL_MAX_PRECISION:
                raise ProgrammingError(
                    f"DECIMAL precision must be between 1 and {_DECIMAL_MAX_PRECISION}, "
                    f"not {self.precision}"
                )
            if not 0 <= self.scale <= self.precision:
                raise ProgrammingError(
                    f"DECIMAL scale must be between 0 and the precision {self.precision}, "
                    f"not {self.scale}"
                )
        elif self.precision is not None:
            raise ProgrammingError(f"{self.name} takes no precision; only DECIMAL does")
        if kind == "fraction":
            if self.scale is None or not 0 <= self.scale <= _FRACTION_DEFAULT:
                raise ProgrammingError(
                    f"{self.name} needs a fractional-second scale between 0 and 7, not {self.scale}"
                )
        elif kind != "decimal" and self.scale is not None:
            raise ProgrammingError(f"{self.name} takes no scale")
        if kind == "length":
            if self.length is not None and self.length < 1:
                raise ProgrammingError(f"{self.name} length must be at least 1, not {self.length}")
        elif self.length is not None:
            raise ProgrammingError(f"{self.name} takes no length")

    def __str__(self) -> str:
        kind = _FAMILIES[self.name].parameters
        if kind == "decimal":
            return f"DECIMAL({self.precision},{self.scale})"
        if kind == "fraction" and self.scale != _FRACTION_DEFAULT:
            return f"{self.name}({self.scale})"
        if kind == "length" and self.length is not None:
            return f"{self.name}({self.length})"
        return self.name

    @property
    def canonical(self) -> str:
        """The canonical spelling, the same as str(self); parse_sql_type reads it back."""
        return str(self)

    @property
    def category(self) -> TypeCategory:
        """The type's family, e.g. TypeCategory.INTEGER for SMALLINT."""
        return _FAMILIES[self.name].category

    @property
    def form(self) -> NormalizationForm:
        """The normalization rule v1 byte layout of the type's plaintext."""
        return _FAMILIES[self.name].form

    @property
    def duckdb_type(self) -> str:
        """The DuckDB type of the plaintext, e.g. VARCHAR for NVARCHAR(50), FLOAT for REAL."""
        if self.name == "DECIMAL":
            return str(self)
        return _FAMILIES[self.name].duckdb

    @functools.cached_property
    def arrow_type(self) -> pa.DataType:
        """The PyArrow type that plaintext values of this column have (as DuckDB exports them)."""
        if self.name in _INTEGER_ARROW:
            return _INTEGER_ARROW[self.name]
        if self.name == "REAL":
            return pa.float32()
        if self.name == "DOUBLE":
            return pa.float64()
        if self.name == "DECIMAL":
            assert self.precision is not None and self.scale is not None
            return pa.decimal128(self.precision, self.scale)
        if self.name == "DATE":
            return pa.date32()
        if self.name == "TIME":
            return pa.time64("us")
        if self.name == "TIMESTAMP":
            return pa.timestamp("us")
        if self.name == "TIMESTAMPTZ":
            return pa.timestamp("us", tz="UTC")
        if self.name in ("VARCHAR", "NVARCHAR"):
            return pa.string()
        if self.name == "BLOB":
            return pa.binary()
        return pa.uuid()

    @property
    def normalized_width(self) -> int | None:
        """The byte length of every normalized plaintext, or None when it varies.

        >>> parse_sql_type("DATETIMEOFFSET").normalized_width
        10
        """
        return _FIXED_WIDTHS.get(self.form)


_FIXED_WIDTHS = {
    NormalizationForm.INT64: 8,
    NormalizationForm.FLOAT32: 4,
    NormalizationForm.FLOAT64: 8,
    NormalizationForm.DECIMAL: 17,
    NormalizationForm.DATE: 3,
    NormalizationForm.TIME: 5,
    NormalizationForm.DATETIME2: 8,
    NormalizationForm.DATETIMEOFFSET: 10,
    NormalizationForm.GUID: 16,
}

# name, optional "(args)", optional trailing "WITH[OUT] TIME ZONE" (as in TIMESTAMP(3) WITH TIME
# ZONE). Anything else, such as INTEGER[] or STRUCT(...), falls through to "not supported".
_DECLARATION = re.compile(
    r"^(?P<name>[A-Z][A-Z0-9_]*(?: [A-Z][A-Z0-9_]*)*?)"
    r"(?: ?\( ?(?P<args>[^()]*?) ?\))?"
    r"(?P<zone> WITH(?:OUT)? TIME ZONE)?$"
)


def parse_sql_type(text: str) -> SqlType:
    """Parse a column type as written in DuckDB SQL or T-SQL into its canonical SqlType.

    Spellings are case-insensitive; T-SQL aliases (BIT, DATETIME2, DATETIMEOFFSET, NVARCHAR,
    VARBINARY, UNIQUEIDENTIFIER) map to the DuckDB family with the same normalized form.
    An unknown or unsupported type raises NotSupportedError; bad parameters raise
    ProgrammingError.

    >>> str(parse_sql_type("numeric(10, 2)")), str(parse_sql_type("nvarchar(max)"))
    ('DECIMAL(10,2)', 'NVARCHAR')
    >>> str(parse_sql_type("DECIMAL")), parse_sql_type("bit").duckdb_type
    ('DECIMAL(18,3)', 'BOOLEAN')
    """
    if not isinstance(text, str):
        raise ProgrammingError(f"a column type must be given as text, not {type(text).__name__}")
    return _parse_sql_type(text)


@functools.lru_cache(maxsize=512)
def _parse_sql_type(text: str) -> SqlType:
    """parse_sql_type, kept per spelling (a statement parses the same types on every run; a
    spelling that raises is not kept)."""
    cleaned = " ".join(text.upper().split())
    match = _DECLARATION.match(cleaned)
    if match is None:
        raise NotSupportedError(_unsupported_message(text.strip()))
    written = match["name"] + (match["zone"] or "")
    family = _ALIASES.get(written)
    if family is None:
        raise NotSupportedError(_unsupported_message(written))
    arguments = _arguments(match["args"], written)
    kind = _FAMILIES[family].parameters
    if arguments and kind is None:
        raise ProgrammingError(f"{written} takes no parameters; write it as {family}")
    if kind == "decimal":
        numbers = [number for number in arguments if number is not None]
        if len(numbers) != len(arguments) or len(numbers) > 2:
            raise ProgrammingError(f"{written} takes (precision) or (precision, scale)")
        if numbers:
            precision, scale = numbers[0], numbers[1] if len(numbers) == 2 else 0
        else:
            precision, scale = _DECIMAL_DEFAULT
        return SqlType("DECIMAL", precision=precision, scale=scale)
    if kind == "fraction":
        if len(arguments) > 1 or None in arguments:
            raise ProgrammingError(f"{written} takes one fractional-second scale, 0 to 7")
        return SqlType(family, scale=arguments[0] if arguments else _FRACTION_DEFAULT)
    if kind == "length":
        if len(arguments) > 1:
            raise ProgrammingError(f"{written} takes one length (or MAX)")
        return SqlType(family, length=arguments[0] if arguments else None)
    return SqlType(family)


def _arguments(raw: str | None, written: str) -> list[int | None]:
    """The comma-separated integer parameters; MAX becomes None (an unbounded length)."""
    if raw is None:
        return []
    values: list[int | None] = []
    for piece in raw.split(","):
        piece = piece.strip()
        if piece == "MAX":
            values.append(None)
        elif piece.isdigit():
            values.append(int(piece))
        else:
            raise ProgrammingError(
                f"{written} has a parameter that is not a whole number; "
                "write e.g. DECIMAL(10,2) or NVARCHAR(50)"
            )
    return values


def _unsupported_message(written: str) -> str:
    return (
        f"type {written or '(empty)'} is not supported for encrypted columns; supported types: "
        f"{', '.join(_FAMILIES)} (and their aliases)"
    )

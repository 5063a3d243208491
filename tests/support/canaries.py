"""Canary plaintexts for leak scans: one fresh, recognisable value per encrypted column type, the
byte forms a leak could take (UTF-8 and UTF-16LE text, the rule-v1 normalized bytes) and a scan
that reports where any form was found.

It only makes values and searches bytes; it must not open databases, run SQL or decide what is
scanned (the tests do).
"""

from __future__ import annotations

import datetime
import decimal
import secrets
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.client.normalization import normalize

__all__ = [
    "CANARY_TYPES",
    "Canary",
    "CanaryBook",
    "exception_texts",
    "find_leaks",
]

# Normalized forms shorter than this are not searched as raw bytes: a 3-byte DATE would match
# random bytes of a megabyte file with a few percent probability, a false alarm. Such a canary is
# still searched in every text form.
MIN_BINARY_FORM = 5

# One declared type per encrypted column type the suite covers; the key is the column suffix.
CANARY_TYPES: dict[str, str] = {
    "int": "INTEGER",
    "bigint": "BIGINT",
    "decimal": "DECIMAL(18,4)",
    "double": "DOUBLE",
    "date": "DATE",
    "time": "TIME",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "varchar": "VARCHAR",
    "nvarchar": "NVARCHAR(80)",
    "blob": "BLOB",
    "uuid": "UUID",
}


@dataclass(frozen=True)
class Canary:
    """One plaintext written to one encrypted column type, with a label saying how it got there."""

    kind: str
    declared_type: str
    value: object
    label: str

    def text_forms(self) -> list[str]:
        """The value as a person or a log line would write it."""
        value = self.value
        if isinstance(value, bytes):
            return [value.hex(), value.hex().upper()]
        if isinstance(value, (datetime.date, datetime.time)):
            return [value.isoformat(), str(value)]
        return [str(value)]

    def forms(self) -> list[tuple[str, bytes]]:
        """Every (name, bytes) form that must not be found anywhere the host can read.

        A VARCHAR's normalized form is its UTF-8, so that form is listed once:

        >>> canary = Canary("varchar", "VARCHAR", "CANARY-x", "doc")
        >>> [name for name, _ in canary.forms()]
        ['normalized', 'utf-16le']
        """
        found: list[tuple[str, bytes]] = []
        binary = normalize([self.value], self.declared_type).to_pylist()[0]
        if len(binary) >= MIN_BINARY_FORM:
            found.append(("normalized", binary))
        if isinstance(self.value, bytes):
            found.append(("raw", self.value))
        for text in dict.fromkeys(self.text_forms()):
            found.append(("utf-8", text.encode("utf-8")))
            found.append(("utf-16le", text.encode("utf-16-le")))
        # Identical forms (a VARCHAR's normalized bytes are its UTF-8) are searched once.
        unique: dict[bytes, str] = {}
        for name, form in found:
            unique.setdefault(form, name)
        return [(name, form) for form, name in unique.items()]


def _fresh_value(kind: str) -> object:
    """A random value of ``kind`` whose every form is long and unlikely to occur by chance."""
    token = secrets.token_hex(6)
    bits = secrets.randbits
    if kind == "int":
        return 1_000_000_000 + bits(30)  # ten digits; four random bytes in the normalized form
    if kind == "bigint":
        return (1 << 61) | bits(60)
    if kind == "decimal":
        return decimal.Decimal(f"{10**12 + bits(38)}.{bits(13) % 10_000:04d}")
    if kind == "double":
        return float(f"{1 + bits(40)}.{bits(20):06d}5")
    if kind == "date":
        return datetime.date(2100 + bits(9) % 800, 1 + bits(4) % 12, 1 + bits(5) % 28)
    if kind == "time":
        return datetime.time(bits(5) % 24, bits(6) % 60, bits(6) % 60, 1 + bits(20) % 999_999)
    if kind in ("timestamp", "timestamptz"):
        moment = datetime.datetime(2100 + bits(9) % 800, 1 + bits(4) % 12, 1 + bits(5) % 28)
        moment += datetime.timedelta(seconds=bits(16), microseconds=1 + bits(20) % 999_999)
        return moment.replace(tzinfo=datetime.UTC) if kind == "timestamptz" else moment
    if kind == "varchar":
        # Non-ASCII on purpose: its UTF-8 and UTF-16LE forms differ from any Latin-1 spelling.
        return f"CANARY-vc-{token}-Zürich-東京"
    if kind == "nvarchar":
        return f"CANARY-nv-{token}-Ωmega-한국"
    if kind == "blob":
        return b"CANARY-blob-" + secrets.token_bytes(12)
    if kind == "uuid":
        return uuid.uuid4()
    raise KeyError(f"no canary kind {kind!r}; the kinds are {', '.join(CANARY_TYPES)}")


@dataclass
class CanaryBook:
    """Hands out fresh canaries and remembers each one, so a scan can look for all of them.

    >>> book = CanaryBook()
    >>> a, b = book.new("varchar", "first"), book.new("varchar", "second")
    >>> a != b and len(book.canaries) == 2
    True
    """

    canaries: list[Canary] = field(default_factory=list)

    def new(self, kind: str, label: str) -> object:
        """A fresh value for the column type ``kind`` (a key of CANARY_TYPES)."""
        value = _fresh_value(kind)
        self.canaries.append(Canary(kind, CANARY_TYPES[kind], value, label))
        return value

    def row(self, label: str) -> dict[str, object]:
        """One fresh canary per column type, keyed by the type's column suffix."""
        return {kind: self.new(kind, label) for kind in CANARY_TYPES}


def find_leaks(canaries: Iterable[Canary], haystacks: Mapping[str, bytes]) -> list[str]:
    """A line per (canary, form, place) where a form of a canary occurs; empty when none does.

    The lines name the canary by label and type only, so a failing assertion does not print the
    plaintext either.

    >>> canary = Canary("nvarchar", "NVARCHAR(20)", "CANARY-x", "doc")
    >>> find_leaks([canary], {"log": b"... CANARY-x ...", "file": b"nothing"})
    ['doc NVARCHAR(20) (utf-8) in log']
    """
    leaks = []
    for canary in canaries:
        for name, form in canary.forms():
            for place, haystack in haystacks.items():
                if form in haystack:
                    leaks.append(f"{canary.label} {canary.declared_type} ({name}) in {place}")
    return leaks


def exception_texts(error: BaseException, *, include_hidden: bool = False) -> str:
    """The message and formatted traceback of ``error`` and of every exception chained to it as
    ``traceback.format_exception`` shows them. With ``include_hidden``, also the contexts that
    ``raise … from None`` hides from display (the exception object still references them).

    >>> try:
    ...     try:
    ...         raise ValueError("inner secret")
    ...     except ValueError:
    ...         raise RuntimeError("outer") from None
    ... except RuntimeError as caught:
    ...     "inner secret" in exception_texts(caught), "inner secret" in exception_texts(
    ...         caught, include_hidden=True)
    (False, True)
    """
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts.append(repr(current))
        parts.append(str(current))
        parts.extend(traceback.format_exception(current))
        parts.extend(str(note) for note in getattr(current, "__notes__", ()))
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None and (include_hidden or not current.__suppress_context__):
            pending.append(current.__context__)
    return "\n".join(parts)

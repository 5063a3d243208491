"""Render a query result as text in one of the shell's output modes: table, csv, json, markdown.

It only formats values it is given; it never fetches, decrypts or decides which columns are
encrypted (the caller passes that in), and it never shortens csv, json or markdown output.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import decimal
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prompt_toolkit.utils import get_cwidth

__all__ = [
    "MODES",
    "ENCRYPTED_MARK",
    "ResultSet",
    "render",
    "format_cell",
    "hex_preview",
    "status_line",
    "render_value",
]

MODES = ("table", "csv", "json", "markdown")

# An ASCII mark: emoji have terminal-dependent widths and misalign boxes in tmux and SSH.
ENCRYPTED_MARK = "*"

# SSMS shows long varbinary values cut short; 16 bytes keep a table readable.
_HEX_PREVIEW_BYTES = 16
# Wider cells are cut so that one long value cannot push every other column off screen.
_MAX_CELL_WIDTH = 60


@dataclass(frozen=True)
class ResultSet:
    """Rows of one query plus what the renderer needs to know about them.

    ``more_rows`` counts rows that exist beyond ``rows`` (only table mode is ever cut short).
    """

    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    encrypted: tuple[bool, ...] = ()
    more_rows: int = 0

    def is_encrypted(self, index: int) -> bool:
        return index < len(self.encrypted) and self.encrypted[index]


def hex_preview(
    value: bytes | bytearray | memoryview, limit: int | None = _HEX_PREVIEW_BYTES
) -> str:
    """Binary as `0x` and upper-case hex, cut after ``limit`` bytes with `…` as SSMS does.

    >>> hex_preview(bytes(range(3)))
    '0x000102'
    >>> hex_preview(bytes(20), limit=2)
    '0x0000…'
    """
    data = bytes(value)
    if limit is not None and len(data) > limit:
        return "0x" + data[:limit].hex().upper() + "…"
    return "0x" + data.hex().upper()


def format_cell(value: Any, *, null: str = "NULL", binary_limit: int | None = None) -> str:
    """One value as text; binary becomes hex, booleans are lower-case as in DuckDB.

    >>> format_cell(None), format_cell(True), format_cell(b"\\x01"), format_cell(1.5)
    ('NULL', 'true', '0x01', '1.5')
    """
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return hex_preview(value, binary_limit)
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return hex_preview(value, None)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        # Decimals travel as strings so that no digit is lost to a float.
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def _clip(text: str, width: int) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if get_cwidth(text) <= width:
        return text
    out = ""
    for char in text:
        if get_cwidth(out + char) > width - 1:
            break
        out += char
    return out + "…"


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - get_cwidth(text))
    return gap + text if right else text + gap


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _render_table(result: ResultSet) -> str:
    headers = [
        name + ENCRYPTED_MARK if result.is_encrypted(index) else name
        for index, name in enumerate(result.columns)
    ]
    cells = [
        [
            _clip(format_cell(value, binary_limit=_HEX_PREVIEW_BYTES), _MAX_CELL_WIDTH)
            for value in row
        ]
        for row in result.rows
    ]
    numeric = [
        all(_is_number(row[index]) for row in result.rows if row[index] is not None)
        and any(row[index] is not None for row in result.rows)
        for index in range(len(headers))
    ]
    widths = [
        max([get_cwidth(header)] + [get_cwidth(row[index]) for row in cells])
        for index, header in enumerate(headers)
    ]

    def rule(left: str, middle: str, right: str) -> str:
        return left + middle.join("─" * (width + 2) for width in widths) + right

    def line(values: Sequence[str], align: Sequence[bool]) -> str:
        padded = (_pad(value, widths[i], align[i]) for i, value in enumerate(values))
        return "│ " + " │ ".join(padded) + " │"

    lines = [rule("┌", "┬", "┐"), line(headers, [False] * len(headers)), rule("├", "┼", "┤")]
    lines += [line(row, numeric) for row in cells]
    lines.append(rule("└", "┴", "┘"))
    if result.more_rows:
        lines.append(f"… {_plural(result.more_rows, 'more row')}")
    total = len(result.rows) + result.more_rows
    footer = _plural(total, "row")
    if any(result.is_encrypted(index) for index in range(len(headers))):
        footer += f"  ({ENCRYPTED_MARK} encrypted column)"
    lines.append(footer)
    return "\n".join(lines) + "\n"


def _render_csv(result: ResultSet) -> str:
    # The writer quotes a field only for characters of its line terminator, so it writes
    # CRLF (quoting both \r and \n) and each record's own CRLF is then cut back to \n.
    lines = []
    for row in [result.columns, *result.rows]:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(
            format_cell(value, null="") for value in row
        )
        lines.append(buffer.getvalue().removesuffix("\r\n"))
    return "\n".join(lines) + "\n"


def _render_json(result: ResultSet) -> str:
    if not result.rows:
        return "[]\n"
    objects = [
        json.dumps(
            {name: _json_value(value) for name, value in zip(result.columns, row, strict=True)},
            ensure_ascii=False,
        )
        for row in result.rows
    ]
    return "[" + ",\n".join(objects) + "]\n"


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _render_markdown(result: ResultSet) -> str:
    lines = [
        "| " + " | ".join(_markdown_cell(name) for name in result.columns) + " |",
        "|" + "|".join(" --- " for _ in result.columns) + "|",
    ]
    for row in result.rows:
        lines.append("| " + " | ".join(_markdown_cell(format_cell(value)) for value in row) + " |")
    return "\n".join(lines) + "\n"


_RENDERERS = {
    "table": _render_table,
    "csv": _render_csv,
    "json": _render_json,
    "markdown": _render_markdown,
}


def render(result: ResultSet, mode: str) -> str:
    """``result`` as text in ``mode`` (one of MODES), ending in a newline.

    >>> print(render(ResultSet(("id", "name"), [(1, "Ann"), (2, None)]), "csv"), end="")
    id,name
    1,Ann
    2,
    >>> print(render(ResultSet(("n",), [(7,)], encrypted=(True,)), "table"), end="")
    ┌────┐
    │ n* │
    ├────┤
    │  7 │
    └────┘
    1 row  (* encrypted column)
    """
    try:
        renderer = _RENDERERS[mode]
    except KeyError:
        raise ValueError(f"unknown output mode {mode!r}; use one of {', '.join(MODES)}") from None
    return renderer(result)


def status_line(rowcount: int) -> str:
    """What a statement without a result set prints.

    >>> status_line(3), status_line(1), status_line(-1)
    ('3 rows affected', '1 row affected', 'OK')
    """
    if rowcount is None or rowcount < 0:
        return "OK"
    return _plural(rowcount, "row") + " affected"


def _as_mapping(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def render_value(value: Any) -> str:
    """What an engine extension returned (`explain`, `attestation_summary`), as text: a string
    as it is, a mapping or dataclass as aligned `key  value` lines, a list of them as a table.

    >>> print(render_value({"measurement": "ab12", "svn": 3}), end="")
    measurement  ab12
    svn          3
    """
    value = _as_mapping(value)
    if isinstance(value, str):
        return value if value.endswith("\n") else value + "\n"
    if isinstance(value, dict):
        width = max((len(str(key)) for key in value), default=0)
        return "".join(
            f"{str(key).ljust(width)}  {format_cell(item)}\n" for key, item in value.items()
        )
    if isinstance(value, list | tuple) and value:
        rows = [_as_mapping(item) for item in value]
        if all(isinstance(row, dict) for row in rows):
            columns = tuple(rows[0])
            return render(
                ResultSet(columns, [tuple(row.get(c) for c in columns) for row in rows]), "table"
            )
        return "".join(f"{format_cell(item)}\n" for item in rows)
    return f"{format_cell(value)}\n"

"""Tag columns: the hidden BIGINT beside each DETERMINISTIC column, equal to the first 60 bits
of the cell's authentication tag (cell bytes 1..8), so an equality lookup scans integers.

It defines the tag once, as a Python function and as the DuckDB expression every write uses;
the two must always agree. It is pure (no I/O, no keys) and decides nothing about plans.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from engine.sql.catalog import CatalogSnapshot, ColumnInfo

__all__ = [
    "TAG_PREFIX",
    "cell_tag",
    "cell_tags",
    "tag_column_name",
    "tag_expression",
    "tag_sql",
    "tagged_column",
]

# Chosen so that no reasonable user column clashes; the catalog records the name in use, so a
# table created under another rule keeps working.
TAG_PREFIX = "__ae_tag_"


def tag_column_name(column: str) -> str:
    """The name of the tag column of an encrypted column.

    >>> tag_column_name("ssn")
    '__ae_tag_ssn'
    """
    return TAG_PREFIX + column


def cell_tag(cell: bytes | None) -> int:
    """The tag of one cell: the first 15 hex digits of its bytes 1..8 (the MAC's first bytes,
    deterministic for deterministic encryption), 0 for NULL. 60 bits keep the value positive
    in a BIGINT; a collision only costs DuckDB one cell comparison more.

    >>> cell_tag(bytes([1, 0xAB, 0xCD] + [0] * 62)) == 0xABCD00000000000
    True
    >>> cell_tag(None), cell_tag(b"\\x01")
    (0, 0)
    """
    if cell is None:
        return 0
    digits = bytes(cell[1:9]).hex()[:15]
    return int(digits, 16) if digits else 0


def cell_tags(cells: Any) -> Any:
    """``tag_columns.cell_tag`` of every cell of a binary array, as int64, without a Python
    loop over rows (executemany and bulk_insert write whole columns). ``cells`` is a
    ``pyarrow`` binary array; the result an int64 array.

    >>> import pyarrow as pa
    >>> cell = bytes([1, 0xAB] + [0] * 63)
    >>> cell_tags(pa.array([cell, None], pa.binary())).to_pylist() == [0xAB << 52, 0]
    True
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    if len(cells) == 0:
        return pa.array([], pa.int64())
    filled = pc.fill_null(cells, b"").cast(pa.binary())
    lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False)
    if np.any((lengths > 0) & (lengths < 9)):
        # Cells this short are never ours; the exact rule handles them one by one.
        return pa.array([cell_tag(c) for c in cells.to_pylist()], pa.int64())
    heads = pc.binary_slice(filled, 1, 9)
    padded = pc.if_else(pc.equal(lengths, 0), b"\x00" * 8, heads)
    fixed = padded.cast(pa.binary(8))
    words = np.frombuffer(fixed.buffers()[1], dtype=">u8", count=len(fixed), offset=0)
    return pa.array((words >> np.uint64(4)).astype(np.int64), pa.int64())


def tag_sql(cell: str) -> str:
    """The DuckDB expression of ``cell_tag`` over the BLOB expression ``cell`` (SQL text).

    >>> tag_sql('"ssn"')
    'coalesce(TRY_CAST(\\'0x\\' || substr(hex("ssn"), 3, 15) AS BIGINT), 0)'
    """
    # hex() spells byte 0 as the first two digits, so digit 3 starts byte 1. TRY_CAST only
    # matters for a cell shorter than two bytes ('0x' alone), which cell_tag maps to 0 too.
    return f"coalesce(TRY_CAST('0x' || substr(hex({cell}), 3, 15) AS BIGINT), 0)"


def tag_expression(cell: exp.Expr) -> exp.Expr:
    """``tag_sql`` as a sqlglot tree over ``cell`` (which is used as is, not copied)."""
    hexed = exp.Anonymous(this="hex", expressions=[cell])
    digits = exp.Substring(this=hexed, start=exp.Literal.number(3), length=exp.Literal.number(15))
    text = exp.DPipe(this=exp.Literal.string("0x"), expression=digits)
    number = exp.TryCast(this=text, to=exp.DataType.build("BIGINT"))
    return exp.Coalesce(this=number, expressions=[exp.Literal.number(0)])


def tagged_column(catalog: CatalogSnapshot, table: str, column: str) -> ColumnInfo | None:
    """The catalog's column ``table.column`` when it is DETERMINISTIC and has a tag column
    (which writes must fill; lookups also check ``ColumnInfo.indexed``)."""
    if not catalog.has_table(table):
        return None
    info = catalog.table(table)
    if not any(c.name.casefold() == column.casefold() for c in info.columns):
        return None
    found = info.column(column)
    if found.tag_column is None or found.encryption is None:
        return None
    return found if found.encryption.encryption_type == "DETERMINISTIC" else None

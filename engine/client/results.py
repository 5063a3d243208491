"""Result decryption: replace each ciphertext column of an Arrow result by its plaintext, one
native call per column per record batch, typed as the column's declared type; and result names:
give each column the name the client's plan has for it (DuckDB's own, engine.sql.result_names).

It decrypts only columns the client's own plan marks; it must not log or keep values or keys.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pyarrow as pa

from engine.client.codec import decrypt_column
from engine.client.parameters import KeyLookup
from engine.sql.plan import ResultColumn
from engine.types import SqlType, parse_sql_type

__all__ = ["decrypt_result", "name_result"]


def decrypt_result(
    table: pa.Table, columns: Sequence[ResultColumn], key_for: KeyLookup
) -> pa.Table:
    """``table`` with every column whose ResultColumn has a target decrypted.

    >>> import os
    >>> from engine.client.codec import encrypt_column
    >>> from engine.sql.plan import EncryptionTarget
    >>> key = os.urandom(32)
    >>> target = EncryptionTarget("p", "n", "cek1", "RANDOMIZED", "NVARCHAR(9)")
    >>> cells = pa.table({"n": encrypt_column(["Zoë", None], key, "RANDOMIZED", "NVARCHAR(9)")})
    >>> plain = decrypt_result(cells, [ResultColumn("n", "NVARCHAR(9)", target)], lambda _: key)
    >>> plain.column("n").to_pylist()
    ['Zoë', None]
    """
    arrays = list(table.columns)
    fields = list(table.schema)
    keys: dict[str, bytes] = {}  # one lookup (and key check) per CEK, not per column
    for index, column in enumerate(columns):
        target = column.target
        if target is None or index >= len(arrays):
            continue
        declared = _declared(target.declared_type)
        key = keys.get(target.cek_name)
        if key is None:
            key = keys[target.cek_name] = key_for(target.cek_name)
        chunks = [
            decrypt_column(chunk, key, declared, column=target.label)
            for chunk in arrays[index].chunks
        ]
        arrays[index] = pa.chunked_array(chunks, type=declared.arrow_type)
        fields[index] = pa.field(fields[index].name, declared.arrow_type)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


@functools.lru_cache(maxsize=256)
def _declared(declared_type: str) -> SqlType:
    """``parse_sql_type``, kept per spelling: a warm query decrypts the same types each run."""
    return parse_sql_type(declared_type)


def name_result(table: pa.Table, columns: Sequence[ResultColumn]) -> pa.Table:
    """``table`` with its columns named as ``columns`` says (no copy of the data); unchanged
    when the plan has no column list for it (a statement the host ran as written).

    >>> table = pa.table({"_col_0": [1], "id": [2]})
    >>> name_result(table, [ResultColumn("min(n)", None, None), ResultColumn("id", None, None)])
    pyarrow.Table
    min(n): int64
    id: int64
    ----
    min(n): [[1]]
    id: [[2]]
    """
    names = [column.name for column in columns]
    if len(names) != table.num_columns or names == table.column_names:
        return table
    return table.rename_columns(names)

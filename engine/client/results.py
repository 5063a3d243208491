"""Result decryption: replace each ciphertext column of an Arrow result by its plaintext, one
native call per column per record batch, typed as the column's declared type; and result names:
give each column the name the client's plan has for it (DuckDB's own, engine.sql.result_names).

It decrypts only columns the client's own plan marks; it must not log or keep values or keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from engine.client.codec import CodecKey, decrypt_column
from engine.client.parameters import CodecKeyLookup
from engine.sql.plan import ResultColumn
from engine.types import parse_sql_type

__all__ = ["decrypt_result", "name_result"]


def decrypt_result(
    table: pa.Table, columns: Sequence[ResultColumn], key_for: CodecKeyLookup
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
    keys: dict[str, CodecKey] = {}  # one lookup (and key check) per CEK, not per column
    names = table.column_names
    for index, column in enumerate(columns):
        target = column.target
        if target is None or index >= len(names):
            continue
        declared = parse_sql_type(target.declared_type)
        key = keys.get(target.cek_name)
        if key is None:
            key = keys[target.cek_name] = key_for(target.cek_name)
        chunks = [
            decrypt_column(chunk, key, declared, column=target.label)
            for chunk in table.column(index).chunks
        ]
        # Column by column, without rebuilding the table (no data is copied either way).
        table = table.set_column(
            index,
            pa.field(names[index], declared.arrow_type),
            pa.chunked_array(chunks, type=declared.arrow_type),
        )
    return table


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

"""Small query results without Arrow tables: a result of at most SMALL_VALUES rows becomes one
Python list per column, each encrypted column's cells decrypted in one native call (the codec's
few-values path); the decrypted Arrow table is built only when asked for (fetch_arrow_table,
fetchdf), from those values.

It answers None wherever the Arrow path must decide (enclave operations, several chunks, a
plaintext the few-values path does not convert), so values and errors are the Arrow path's:
each list equals ``decrypt_result(...).column(i).to_pylist()``. It must not log values or keep
keys; the values it holds are the result the cursor would hold anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from engine.client.codec import SMALL_VALUES, CodecKey, decrypt_values
from engine.client.parameters import CodecKeyLookup
from engine.client.results import name_result
from engine.sql.plan import ResultColumn
from engine.types import NormalizationForm, parse_sql_type

__all__ = ["SmallResult", "small_result"]

# Forms whose Python values Arrow gives differently (the time zone object of a TIMESTAMPTZ):
# their values go through Arrow once, as the batch path's would. tests/unit/test_small_results
# compares every declared type's values, with their reprs, against the Arrow path.
_VIA_ARROW = (NormalizationForm.DATETIMEOFFSET,)


class SmallResult:
    """A decrypted result as column lists, with its Arrow table built on first request."""

    __slots__ = ("_columns", "_decrypted", "_raw", "_table", "names", "types", "values")

    def __init__(
        self,
        raw: pa.Table,
        columns: Sequence[ResultColumn],
        names: list[str],
        types: list[pa.DataType],
        values: list[list[object]],
        decrypted: list[int],
    ) -> None:
        self._raw = raw  # as the host gave it: ciphertext in the decrypted columns
        self._columns = columns
        self._decrypted = decrypted
        self._table: pa.Table | None = None
        self.names = names
        self.types = types
        self.values = values

    def arrow(self) -> pa.Table:
        """The result as the Arrow path gives it (decrypted columns typed as declared)."""
        if self._table is None:
            table = name_result(self._raw, self._columns)
            for index in self._decrypted:
                arrow_type = self.types[index]
                chunks = (
                    [pa.array(self.values[index], type=arrow_type)]
                    if table.column(index).num_chunks
                    else []
                )
                table = table.set_column(
                    index,
                    pa.field(self.names[index], arrow_type),
                    pa.chunked_array(chunks, type=arrow_type),
                )
            self._table = table
        return self._table


def small_result(
    table: pa.Table, columns: Sequence[ResultColumn], key_for: CodecKeyLookup | None
) -> SmallResult | None:
    """``table`` (the host's result) decrypted as column lists, or None when it must take the
    Arrow path (more than SMALL_VALUES rows, a column in several chunks, a value the few-values
    path does not convert). ``key_for`` None: nothing is decrypted (column_encryption off).
    A tampered cell raises CellAuthenticationError, as on the Arrow path.
    """
    if table.num_rows > SMALL_VALUES:
        return None
    batches = table.to_batches()
    if len(batches) > 1:
        return None
    arrays = batches[0].columns if batches else [None] * table.num_columns
    names = [column.name for column in columns]
    if len(names) != table.num_columns:
        names = table.column_names
    types = table.schema.types
    values: list[list[object]] = []
    decrypted: list[int] = []
    keys: dict[str, CodecKey] = {}
    for index, array in enumerate(arrays):
        target = columns[index].target if key_for is not None and index < len(columns) else None
        if target is None:
            values.append([] if array is None else array.to_pylist(maps_as_pydicts="lossy"))
            continue
        assert key_for is not None
        declared = parse_sql_type(target.declared_type)
        key = keys.get(target.cek_name)
        if key is None:
            key = keys[target.cek_name] = key_for(target.cek_name)
        plain = decrypt_values([] if array is None else array.to_pylist(), key, declared)
        if plain is None:
            return None
        if declared.form in _VIA_ARROW:
            plain = pa.array(plain, type=declared.arrow_type).to_pylist()
        values.append(plain)
        types[index] = declared.arrow_type
        decrypted.append(index)
    return SmallResult(table, columns, names, types, values, decrypted)

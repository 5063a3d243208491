"""Parameter values for the host: pick each ``?``'s value (the caller's or a lifted literal) and
encrypt every value aimed at an encrypted column, one native call per target column.

It never sends anything anywhere; it returns the values the host may see (ciphertext for
encrypted targets). It must not let a plaintext value with a target through unencrypted.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from engine.client.codec import CodecKey, encrypt_column, encrypt_values
from engine.client.forced_encryption import unwrap_forced_column
from engine.errors import ProgrammingError
from engine.sql.plan import EncryptionTarget, ParameterSpec
from engine.sql.rewrite_inexact_comparisons import exact_comparand
from engine.sql.tag_columns import cell_tag, cell_tags
from engine.types import parse_sql_type

__all__ = [
    "CodecKeyLookup",
    "KeyLookup",
    "coerce_text",
    "encrypt_parameter_columns",
    "encrypt_parameters",
]

KeyLookup = Callable[[str], bytes]
"""Returns the plaintext CEK named by a ``cek_name``."""

CodecKeyLookup = Callable[[str], CodecKey]
"""Returns the CEK named by a ``cek_name`` as the codec takes it (bytes or a ColumnKey)."""

# executemany encrypts its columns in parallel from this many rows on (below, threads cost more).
_PARALLEL_ROWS = 4096


def _blob_from_text(text: str) -> bytes:
    """Bytes of a BLOB written as text, read as DuckDB reads it: ``\\xHH`` is one byte."""
    out = bytearray()
    index = 0
    while index < len(text):
        if text.startswith("\\x", index) and index + 4 <= len(text):
            try:
                out.append(int(text[index + 2 : index + 4], 16))
                index += 4
                continue
            except ValueError:
                pass
        out.extend(text[index].encode("utf-8"))
        index += 1
    return bytes(out)


def _time_from_text(text: str) -> object:
    try:
        return datetime.time.fromisoformat(text.strip())
    except ValueError:
        return text  # left for normalization, which raises DataError naming the column


def _timestamptz_from_text(text: str) -> object:
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    # DuckDB reads a time zone-less TIMESTAMPTZ text in the session time zone, UTC by default.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


_TEXT_READERS: dict[str, Callable[[str], object]] = {
    "BLOB": _blob_from_text,
    "TIME": _time_from_text,
    "TIMESTAMPTZ": _timestamptz_from_text,
}


def coerce_text(values: list[object], declared_type: str) -> list[object]:
    r"""Text values for the types whose text form Arrow cannot cast, read as DuckDB reads them
    (typed literals such as ``TIME '10:11:12'`` arrive as text).

    >>> coerce_text(["10:11:12", None], "TIME")
    [datetime.time(10, 11, 12), None]
    >>> coerce_text(["\\xAA\\x00z"], "BLOB")
    [b'\xaa\x00z']
    """
    reader = _TEXT_READERS.get(parse_sql_type(declared_type).name)
    if reader is None or not any(isinstance(v, str) for v in values):
        return values
    return [reader(v) if isinstance(v, str) else v for v in values]


def _value(spec: ParameterSpec, user: Sequence[object]) -> object:
    if spec.source[0] == "user":
        return user[spec.source[1]]
    return spec.source[1]


def _refuse_without_encryption(target: EncryptionTarget) -> ProgrammingError:
    return ProgrammingError(
        f"a value for the encrypted column {target.label} needs column_encryption=True on the "
        "connection; with it off, values for encrypted columns are refused"
    )


def _group_key(target: EncryptionTarget) -> tuple[str, str, str]:
    return (target.cek_name.casefold(), target.encryption_type, target.declared_type)


def encrypt_parameters(
    specs: Sequence[ParameterSpec],
    user: Sequence[object],
    key_for: CodecKeyLookup | None,
) -> list[object]:
    """One value per spec; values with a target become cells. ``key_for`` None means
    column encryption is off, and any value with a target is refused.

    >>> import os
    >>> key = os.urandom(32)
    >>> target = EncryptionTarget("p", "ssn", "cek1", "DETERMINISTIC", "CHAR(11)")
    >>> specs = [ParameterSpec(("literal", "123"), target), ParameterSpec(("user", 0), None)]
    >>> cell, plain = encrypt_parameters(specs, [7], lambda name: key)
    >>> len(cell), plain
    (65, 7)
    """
    values: list[object] = [_value(spec, user) for spec in specs]
    unmatched: set[int] = set()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, spec in enumerate(specs):
        if spec.target is None:
            continue
        if key_for is None:
            raise _refuse_without_encryption(spec.target)
        if spec.compared:
            # Compared, not stored: never round (1.234 must not equal a DECIMAL(12,2) 1.23).
            kind, exact = exact_comparand(values[index], spec.target.declared_type, "EQ")
            if kind != "value":
                # No cell can equal it. A stand-in of the type is encrypted for the cell's
                # length, then replaced below by random bytes that equal no cell either.
                unmatched.add(index)
                exact = exact_comparand(0, spec.target.declared_type, "EQ")[1]
            values[index] = exact
        # Values of different Python types would not share one Arrow array.
        groups.setdefault((*_group_key(spec.target), type(values[index])), []).append(index)
    for indices in groups.values():
        target = specs[indices[0]].target
        assert target is not None and key_for is not None
        cells = encrypt_values(
            coerce_text([values[i] for i in indices], target.declared_type),
            key_for(target.cek_name),
            target.encryption_type,
            target.declared_type,
            column=target.label,
        )
        for position, index in enumerate(indices):
            values[index] = cells[position]
    for index in unmatched:
        # The version byte kept, the rest random: to the host, like any other ciphertext.
        cell = values[index]
        assert isinstance(cell, bytes)
        values[index] = cell[:1] + os.urandom(len(cell) - 1)
    for index, spec in enumerate(specs):
        if spec.tag:
            # The tag of the cell (a function of ciphertext the host sees anyway).
            cell = values[index]
            assert cell is None or isinstance(cell, bytes)
            values[index] = cell_tag(cell)
    return values


def encrypt_parameter_columns(
    specs: Sequence[ParameterSpec],
    rows: Sequence[Sequence[object]],
    key_for: CodecKeyLookup | None,
) -> pa.Table | list[list[object]]:
    """executemany's parameters as columns ``p0 … pn``, each encrypted column in one native
    call. When a plaintext column's values do not fit one Arrow type, returns rows instead.

    >>> import os
    >>> target = EncryptionTarget("p", "ssn", "cek1", "RANDOMIZED", "INT")
    >>> specs = [ParameterSpec(("user", 0), target), ParameterSpec(("user", 1), None)]
    >>> table = encrypt_parameter_columns(specs, [(1, "a"), (2, "b")], lambda n: os.urandom(32))
    >>> table.column_names, table.column("p0").type, table.column("p1").to_pylist()
    (['p0', 'p1'], DataType(binary), ['a', 'b'])
    """
    count = len(rows)
    columns: list[pa.Array] = []
    fits = True
    plain_columns: list[list[object]] = []
    jobs: list[tuple[int, list[object], EncryptionTarget, CodecKey]] = []
    # Rows to columns in one C-level pass (the rows all have one length, checked before).
    transposed = list(zip(*rows, strict=True)) if rows else []
    for spec in specs:
        if spec.source[0] == "user":
            values = unwrap_forced_column(
                list(transposed[spec.source[1]]),
                spec.source[1],
                encrypted=spec.target is not None,
                column_encryption=key_for is not None,
            )
        else:
            values = [spec.source[1]] * count
        plain_columns.append(values)
        if spec.target is None:
            try:
                columns.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                fits = False
                columns.append(pa.nulls(count))
            continue
        if key_for is None:
            raise _refuse_without_encryption(spec.target)
        # Keys are looked up here, one at a time (a first use unwraps the CEK).
        jobs.append((len(columns), values, spec.target, key_for(spec.target.cek_name)))
        columns.append(pa.nulls(0))

    def encrypt(job: tuple[int, list[object], EncryptionTarget, CodecKey]) -> pa.Array:
        _, values, target, key = job
        return encrypt_column(
            coerce_text(values, target.declared_type),
            key,
            target.encryption_type,
            target.declared_type,
            column=target.label,
        )

    if len(jobs) > 1 and count >= _PARALLEL_ROWS:
        # The native calls release the GIL, so the columns encrypt in parallel.
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1, 8)) as pool:
            cells_by_job = list(pool.map(encrypt, jobs))
    else:
        cells_by_job = [encrypt(job) for job in jobs]
    for job, cells in zip(jobs, cells_by_job, strict=True):
        columns[job[0]] = cell_tags(cells) if specs[job[0]].tag else cells
    if fits:
        return pa.table({f"p{j}": column for j, column in enumerate(columns)})
    encrypted = [
        column.to_pylist() if spec.target is not None else plain
        for spec, column, plain in zip(specs, columns, plain_columns, strict=True)
    ]
    return [list(row) for row in zip(*encrypted, strict=True)] if encrypted else [[]] * count

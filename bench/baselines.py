"""The baseline variants of every benchmark case that can run before the SQL layer exists.

For each case it times plaintext DuckDB, the UDF floor (a constant Arrow UDF over the encrypted
column), the native codec without the SQL layer, and client-side decryption with pyca
(enclave/reference.py, one cell per Python call). Every variant's answer is checked against
plaintext DuckDB; a wrong answer raises BenchFailure. It must not print tables or write files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench import tpch
from bench.report import Row, make_row
from enclave.reference import ReferenceCodec
from engine.client.codec import decrypt_column, encrypt_column
from engine.client.normalization import denormalize, normalize

THREADS = 2
UDF_FLOOR = "bench_floor"
UDF_FLOOR3 = "bench_floor3"


class BenchFailure(AssertionError):
    """A variant gave another answer than plaintext DuckDB: a bench failure, not a number."""


@dataclass
class Context:
    """What every case needs: the database, the keys, and how hard to try."""

    con: duckdb.DuckDBPyConnection
    keys: tpch.BenchKeys
    parquet: Path
    repeat: int
    pyca_sample: int
    growth: bool = True
    # The product as a variant (bench.enclavesql.EnclaveSQLVariant), or None to leave it out.
    product: Any = None
    # (case, rows) -> (cells decrypted, cells encrypted): the work the codec floor is made of.
    cells: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    # (case, rows) -> seconds: the decrypt floor of a query case from each column's own rate.
    floor_seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    # "table.column" -> cells/s: the codec decrypting that column's stored cells, one core.
    column_rates: dict[str, float] = field(default_factory=dict)


def connect(database: Path) -> duckdb.DuckDBPyConnection:
    """A connection to the bench database with 2 threads and the UDF floor functions."""
    con = duckdb.connect(str(database))
    con.execute(f"SET threads={THREADS}")
    register_floor(con)
    return con


def register_floor(con: duckdb.DuckDBPyConnection) -> None:
    """Registers the UDF floor: vectorized Arrow UDFs that return a constant true per row.

    They do the least an enclave UDF must do (receive each batch of cells from DuckDB and
    hand back a boolean array of its length), so their time is the floor of any enclave filter.
    """
    from duckdb.sqltypes import BLOB, BOOLEAN

    def floor(cells: pa.Array) -> pa.Array:
        return pa.array(np.ones(len(cells), dtype=np.bool_))

    def floor3(first: pa.Array, second: pa.Array, third: pa.Array) -> pa.Array:
        return pa.array(np.ones(len(first), dtype=np.bool_))

    # type="arrow" is spelled as a string because the enum moved between DuckDB 1.4 and 2.
    arrow: Any = "arrow"
    con.create_function(UDF_FLOOR, floor, [BLOB], BOOLEAN, type=arrow)
    con.create_function(UDF_FLOOR3, floor3, [BLOB, BLOB, BLOB], BOOLEAN, type=arrow)


def measure(work: Callable[[], Any], repeat: int, inner: int = 1) -> tuple[Any, list[float]]:
    """One warm-up, then `repeat` timed runs of `inner` calls; seconds per call, last answer."""
    answer = work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(inner):
            answer = work()
        times.append((time.perf_counter() - started) / inner)
    return answer, times


# ---- comparing answers ---------------------------------------------------------------------


def same_answer(expected: Any, actual: Any, rel_tol: float = 1e-9) -> bool:
    """Whether two answers agree: numbers within rel_tol (decimals compared as floats).

    >>> same_answer([(1, Decimal("2.50"))], [(1, 2.5)])
    True
    >>> same_answer([("A", 3)], [("A", 4)])
    False
    """
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(
            same_answer(left, right, rel_tol) for left, right in zip(expected, actual, strict=True)
        )
    numbers = (int, float, Decimal, np.integer, np.floating)
    if isinstance(expected, numbers) and isinstance(actual, numbers):
        return math.isclose(float(expected), float(actual), rel_tol=rel_tol, abs_tol=1e-9)
    return bool(expected == actual)


def check_column(case: str, variant: str, expected: Any, actual: pa.Array) -> None:
    """Raises BenchFailure unless a decrypted column equals the plaintext column exactly."""
    if isinstance(expected, pa.ChunkedArray):
        expected = expected.combine_chunks()
    if not expected.cast(actual.type).equals(actual):
        raise BenchFailure(
            f"{case}: the {variant} column does not decrypt to the plaintext it was loaded from"
        )


def check(case: str, variant: str, expected: Any, actual: Any) -> None:
    """Raises BenchFailure when a variant's answer differs from plaintext DuckDB's."""
    if not same_answer(expected, actual):
        raise BenchFailure(
            f"{case}: the {variant} answer differs from plaintext DuckDB on the same rows; "
            "the variant is wrong, so it has no timing"
        )


# ---- client-side decryption with pyca (what users do without an enclave) --------------------


class PycaClient:
    """Decrypts cells one Python call at a time with enclave/reference.py, then computes on
    the client with pyarrow. Deterministic columns decrypt only their distinct cells, as a
    careful client would."""

    def __init__(self, keys: tpch.BenchKeys) -> None:
        self._codecs = {
            "DETERMINISTIC": ReferenceCodec(keys.deterministic),
            "RANDOMIZED": ReferenceCodec(keys.randomized),
        }

    def decrypt(self, cells: pa.Array | pa.ChunkedArray, table: str, column: str) -> pa.Array:
        """The plaintext column of a bench table's encrypted column."""
        sql_type, kind = tpch.ENCRYPTED[table][column]
        codec = self._codecs[kind]
        if isinstance(cells, pa.ChunkedArray):
            cells = cells.combine_chunks()
        if kind == "DETERMINISTIC":
            encoded = cells.dictionary_encode()
            values = self._decrypt_each(codec, encoded.dictionary, sql_type)
            return values.take(encoded.indices)
        return self._decrypt_each(codec, cells, sql_type)

    @staticmethod
    def _decrypt_each(codec: ReferenceCodec, cells: pa.Array, sql_type: str) -> pa.Array:
        plain = [None if cell is None else codec.decrypt(cell) for cell in cells.to_pylist()]
        return denormalize(pa.array(plain, type=pa.binary()), sql_type)

    def encrypt(self, values: Any, table: str, column: str) -> pa.Array:
        """AE cells of plaintext values for a bench table's column, one pyca call per cell."""
        sql_type, kind = tpch.ENCRYPTED[table][column]
        codec = self._codecs[kind]
        plain = normalize(values, sql_type, column=column).to_pylist()
        if kind == "DETERMINISTIC":
            cells = [
                None if p is None else codec.encrypt(p, codec.deterministic_iv(p)) for p in plain
            ]
        else:
            cells = [None if p is None else codec.encrypt(p, os.urandom(16)) for p in plain]
        return pa.array(cells, type=pa.binary())


# ---- the query cases -----------------------------------------------------------------------


@dataclass(frozen=True)
class QueryCase:
    """A read-only case: the plaintext SQL, the client-side way to the same answer, its floor.

    `sql` and `floor_sql` are templates over {lineitem}/{customer} and {lineitem_enc}/...;
    `client` computes the answer from an encrypted table of the given name; `decrypts` names
    the encrypted columns whose every cell the answer needs, for the codec floor.
    """

    name: str
    table: str
    sql: str
    client: Callable[[PycaClient, duckdb.DuckDBPyConnection, str], Any]
    decrypts: tuple[str, ...]
    floor_sql: str | None = None
    note: str = ""
    inner: int = 1
    # Keys of the case's names bound, in order, to the `?` markers of `sql` (as an application
    # would pass them; a literal would be lifted and re-described on every run by the product).
    parameters: tuple[str, ...] = ()

    def bind(self, names: dict[str, str]) -> list[str] | None:
        """The values of the case's `?` markers, or None when it has none.

        >>> QueryCase("x", "t", "SELECT ?", lambda *a: None, (), parameters=("phone",)).bind(
        ...     {"phone": "27-918"})
        ['27-918']
        """
        return [names[key] for key in self.parameters] if self.parameters else None


def _column(con: duckdb.DuckDBPyConnection, table: str, *columns: str) -> pa.Table:
    return tpch.arrow_table(con.sql(f"SELECT {', '.join(columns)} FROM {table}"))


def _numbers(array: pa.Array) -> np.ndarray:
    return np.asarray(array.cast(pa.float64()).to_numpy(zero_copy_only=False))


def _days(array: pa.Array) -> np.ndarray:
    return np.asarray(array.cast(pa.int32()).to_numpy(zero_copy_only=False))


def _epoch_days(day: date) -> int:
    return (day - date(1970, 1, 1)).days


RANGE_1PCT = (date(1995, 3, 1), date(1995, 3, 25))


def _client_range_1pct(client: PycaClient, con: Any, table: str) -> Any:
    shipdate = _days(client.decrypt(_column(con, table, "l_shipdate")[0], "lineitem", "l_shipdate"))
    low, high = (_epoch_days(day) for day in RANGE_1PCT)
    return [(int(np.count_nonzero((shipdate >= low) & (shipdate <= high))),)]


def _client_range_50pct(client: PycaClient, con: Any, table: str) -> Any:
    quantity = _numbers(
        client.decrypt(_column(con, table, "l_quantity")[0], "lineitem", "l_quantity")
    )
    return [(int(np.count_nonzero(quantity <= 25)),)]


def _client_like(client: PycaClient, con: Any, table: str) -> Any:
    names = client.decrypt(_column(con, table, "c_name")[0], "customer", "c_name")
    return [(int(pc.sum(pc.match_like(names, "%99%")).as_py() or 0),)]


def _client_order_by(client: PycaClient, con: Any, table: str) -> Any:
    prices = _numbers(
        client.decrypt(_column(con, table, "l_extendedprice")[0], "lineitem", "l_extendedprice")
    )
    # Ties make the rows of a LIMIT ambiguous; the prices of the top 10 are not.
    return [(float(value),) for value in np.sort(prices)[::-1][:10]]


def _client_group_by(client: PycaClient, con: Any, table: str) -> Any:
    data = _column(con, table, "l_returnflag", "l_extendedprice")
    flags = client.decrypt(data["l_returnflag"], "lineitem", "l_returnflag")
    prices = client.decrypt(data["l_extendedprice"], "lineitem", "l_extendedprice")
    grouped = pa.table({"flag": flags, "price": prices.cast(pa.float64())})
    summed = grouped.group_by("flag").aggregate([("price", "sum")]).sort_by("flag")
    return list(zip(summed["flag"].to_pylist(), summed["price_sum"].to_pylist(), strict=True))


def _client_join(client: PycaClient, con: Any, table: str) -> Any:
    # Deterministic cells join on ciphertext equality in DuckDB, no decryption needed; the
    # client decrypts only the names of the rows that come back.
    joined = tpch.arrow_table(
        con.sql(
            f"SELECT c.c_custkey, c.c_name FROM {table} c "
            "JOIN watchlist_enc w ON c.c_phone = w.phone ORDER BY c.c_custkey"
        )
    )
    names = client.decrypt(joined["c_name"], "customer", "c_name")
    return list(zip(joined["c_custkey"].to_pylist(), names.to_pylist(), strict=True))


def _lookup_phone(con: Any) -> str:
    row = con.execute("SELECT c_phone FROM customer ORDER BY c_rowid LIMIT 1 OFFSET 7").fetchall()[
        0
    ]
    return str(row[0])


def _client_point_lookup(client: PycaClient, con: Any, table: str) -> Any:
    # The client encrypts the parameter deterministically; DuckDB finds equal ciphertext.
    phone_cell = client.encrypt([_lookup_phone(con)], "customer", "c_phone")[0].as_py()
    found = tpch.arrow_table(
        con.sql(
            f"SELECT c_custkey, c_name, c_acctbal FROM {table} WHERE c_phone = $cell",
            params={"cell": phone_cell},
        )
    )
    names = client.decrypt(found["c_name"], "customer", "c_name")
    return list(
        zip(
            found["c_custkey"].to_pylist(),
            names.to_pylist(),
            found["c_acctbal"].to_pylist(),
            strict=True,
        )
    )


def _decrypt_lineitem(client: PycaClient, data: pa.Table, *columns: str) -> dict[str, pa.Array]:
    return {column: client.decrypt(data[column], "lineitem", column) for column in columns}


Q1_CUTOFF = date(1998, 9, 2)  # DATE '1998-12-01' - INTERVAL 90 DAY


def _client_q1(client: PycaClient, con: Any, table: str) -> Any:
    data = _column(
        con,
        table,
        "l_returnflag",
        "l_linestatus",
        "l_quantity",
        "l_extendedprice",
        "l_discount",
        "l_tax",
        "l_shipdate",
    )
    plain = _decrypt_lineitem(
        client,
        data,
        "l_returnflag",
        "l_linestatus",
        "l_quantity",
        "l_extendedprice",
        "l_discount",
        "l_shipdate",
    )
    keep = _days(plain["l_shipdate"]) <= _epoch_days(Q1_CUTOFF)
    price = _numbers(plain["l_extendedprice"])[keep]
    discount = _numbers(plain["l_discount"])[keep]
    tax = _numbers(data["l_tax"].combine_chunks())[keep]
    frame = pa.table(
        {
            "flag": plain["l_returnflag"].filter(pa.array(keep)),
            "status": plain["l_linestatus"].filter(pa.array(keep)),
            "qty": _numbers(plain["l_quantity"])[keep],
            "price": price,
            "disc_price": price * (1 - discount),
            "charge": price * (1 - discount) * (1 + tax),
            "disc": discount,
        }
    )
    grouped = (
        frame.group_by(["flag", "status"])
        .aggregate(
            [
                ("qty", "sum"),
                ("price", "sum"),
                ("disc_price", "sum"),
                ("charge", "sum"),
                ("qty", "mean"),
                ("price", "mean"),
                ("disc", "mean"),
                ("qty", "count"),
            ]
        )
        .sort_by([("flag", "ascending"), ("status", "ascending")])
    )
    names = ["flag", "status", "qty_sum", "price_sum", "disc_price_sum", "charge_sum"]
    names += ["qty_mean", "price_mean", "disc_mean", "qty_count"]
    return list(zip(*(grouped[name].to_pylist() for name in names), strict=True))


Q6_DATES = (date(1994, 1, 1), date(1995, 1, 1))


def _client_q6(client: PycaClient, con: Any, table: str) -> Any:
    data = _column(con, table, "l_shipdate", "l_discount", "l_quantity", "l_extendedprice")
    plain = _decrypt_lineitem(client, data, "l_shipdate", "l_discount", "l_quantity")
    days, discount = _days(plain["l_shipdate"]), _numbers(plain["l_discount"])
    low, high = (_epoch_days(day) for day in Q6_DATES)
    keep = (days >= low) & (days < high) & (discount >= 0.05 - 1e-9) & (discount <= 0.07 + 1e-9)
    keep &= _numbers(plain["l_quantity"]) < 24
    # Only the rows that pass the filter need their price decrypted.
    price_cells = data["l_extendedprice"].combine_chunks().filter(pa.array(keep))
    price = _numbers(client.decrypt(price_cells, "lineitem", "l_extendedprice"))
    return [(float(np.sum(price * discount[keep])),)]


def _client_q6_filter(client: PycaClient, con: Any, table: str) -> Any:
    data = _column(con, table, "l_shipdate", "l_discount", "l_quantity", "l_extendedprice")
    plain = _decrypt_lineitem(client, data, "l_shipdate", "l_discount", "l_quantity")
    days, discount = _days(plain["l_shipdate"]), _numbers(plain["l_discount"])
    low, high = (_epoch_days(day) for day in Q6_DATES)
    keep = (days >= low) & (days < high) & (discount >= 0.05 - 1e-9) & (discount <= 0.07 + 1e-9)
    keep &= _numbers(plain["l_quantity"]) < 24
    price_cells = data["l_extendedprice"].combine_chunks().filter(pa.array(keep))
    price = _numbers(client.decrypt(price_cells, "lineitem", "l_extendedprice"))
    return [(float(np.sum(price)) if keep.any() else None,)]


Q1_SQL = """
SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice),
       sum(l_extendedprice * (1 - l_discount)),
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)),
       avg(l_quantity), avg(l_extendedprice), avg(l_discount), count(*)
FROM {lineitem}
WHERE l_shipdate <= CAST('1998-09-02' AS date)
GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"""
Q6_SQL = """
SELECT sum(l_extendedprice * l_discount) FROM {lineitem}
WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"""
# Q6's filter with the sum of the price alone (before arithmetic inside SUM ran in the
# enclave, the part of Q6 the product could run; kept to compare the cost of the product).
Q6_FILTER_SQL = Q6_SQL.replace("sum(l_extendedprice * l_discount)", "sum(l_extendedprice)")

QUERY_CASES = (
    QueryCase(
        "point_lookup",
        "customer",
        "SELECT c_custkey, c_name, c_acctbal FROM {customer} WHERE c_phone = ?",
        _client_point_lookup,
        ("c_phone", "c_name"),
        note="deterministic c_phone = ?",
        inner=20,
        parameters=("phone",),
    ),
    QueryCase(
        "range_1pct",
        "lineitem",
        "SELECT count(*) FROM {lineitem} WHERE l_shipdate BETWEEN DATE '1995-03-01' "
        "AND DATE '1995-03-25'",
        _client_range_1pct,
        ("l_shipdate",),
        floor_sql=f"SELECT count(*) FROM {{lineitem}} WHERE {UDF_FLOOR}(l_shipdate)",
        note="randomized l_shipdate BETWEEN",
    ),
    QueryCase(
        "range_50pct",
        "lineitem",
        "SELECT count(*) FROM {lineitem} WHERE l_quantity <= 25",
        _client_range_50pct,
        ("l_quantity",),
        floor_sql=f"SELECT count(*) FROM {{lineitem}} WHERE {UDF_FLOOR}(l_quantity)",
        note="randomized l_quantity <=",
    ),
    QueryCase(
        "like",
        "customer",
        "SELECT count(*) FROM {customer} WHERE c_name LIKE '%99%'",
        _client_like,
        ("c_name",),
        floor_sql=f"SELECT count(*) FROM {{customer}} WHERE {UDF_FLOOR}(c_name)",
        note="randomized c_name LIKE",
    ),
    QueryCase(
        "order_by_limit",
        "lineitem",
        "SELECT l_extendedprice FROM {lineitem} ORDER BY l_extendedprice DESC LIMIT 10",
        _client_order_by,
        ("l_extendedprice",),
        note="randomized l_extendedprice",
    ),
    QueryCase(
        "group_by_sum",
        "lineitem",
        "SELECT l_returnflag, sum(l_extendedprice) FROM {lineitem} "
        "GROUP BY l_returnflag ORDER BY l_returnflag",
        _client_group_by,
        ("l_extendedprice",),
        note="det. l_returnflag, rnd. sum",
    ),
    QueryCase(
        "join",
        "customer",
        "SELECT c.c_custkey, c.c_name FROM {customer} c JOIN watchlist w ON c.c_phone = w.phone "
        "ORDER BY c.c_custkey",
        _client_join,
        ("c_name",),
        note="deterministic c_phone = watchlist",
    ),
    QueryCase(
        "q1",
        "lineitem",
        Q1_SQL,
        _client_q1,
        ("l_quantity", "l_extendedprice", "l_discount", "l_shipdate"),
        note="TPC-H Q1",
    ),
    QueryCase(
        "q6",
        "lineitem",
        Q6_SQL,
        _client_q6,
        # l_extendedprice is decrypted only for the ~2% of rows that pass the filter.
        ("l_shipdate", "l_discount", "l_quantity"),
        floor_sql=f"SELECT count(*) FROM {{lineitem}} "
        f"WHERE {UDF_FLOOR3}(l_shipdate, l_discount, l_quantity)",
        note="TPC-H Q6",
    ),
    QueryCase(
        "q6_filter",
        "lineitem",
        Q6_FILTER_SQL,
        _client_q6_filter,
        ("l_shipdate", "l_discount", "l_quantity"),
        floor_sql=f"SELECT count(*) FROM {{lineitem}} "
        f"WHERE {UDF_FLOOR3}(l_shipdate, l_discount, l_quantity)",
        note="Q6's filter, sum(l_extendedprice) only",
    ),
)
GROWTH_CASES = ("range_1pct", "range_50pct", "q6", "q6_filter")
CASE_NAMES = tuple(case.name for case in QUERY_CASES) + ("bulk_load", "reencrypt")


def _table_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
    return int(row[0])


def run_query_case(ctx: Context, case: QueryCase, size: int | None = None) -> list[Row]:
    """Times one query case at `size` rows (the full table when None) in every variant."""
    con, client = ctx.con, PycaClient(ctx.keys)
    total = _table_rows(con, case.table)
    size = total if size is None or size >= total else size
    plain_table = case.table if size == total else tpch.first_rows(con, case.table, size)
    enc_table = f"{case.table}_enc"
    enc_sized = enc_table if size == total else tpch.first_rows(con, enc_table, size)
    names = {
        "lineitem": plain_table,
        "customer": plain_table,
        "lineitem_enc": enc_sized,
        "customer_enc": enc_sized,
        "phone": _lookup_phone(con),
    }
    sql = case.sql.format(**names)
    bound = case.bind(names)
    expected, plain_times = measure(
        lambda: con.execute(sql, bound).fetchall(), ctx.repeat, case.inner
    )
    rows = [make_row(case.name, "plaintext", plain_times, size, case.note)]
    if ctx.product is not None:
        rows.append(ctx.product.query_row(case, size, total, expected, names, ctx.repeat))

    if case.floor_sql is not None:
        floor_sql = case.floor_sql.format(lineitem=enc_sized, customer=enc_sized)
        _, floor_times = measure(lambda: con.execute(floor_sql).fetchall(), ctx.repeat)
        note = f"constant Arrow UDF, {THREADS} threads; answer not checked"
        rows.append(make_row(case.name, "udf_floor", floor_times, size, note))

    # The pyca client runs on the first `sample` rows and its time is scaled to the full size;
    # its answer is checked against plaintext DuckDB on exactly those rows.
    sample = min(size, ctx.pyca_sample)
    if case.name in ("point_lookup", "join"):
        sample = size  # these decrypt only the few rows they return
    client_table = enc_sized if sample == size else tpch.first_rows(con, enc_table, sample)
    answer, client_times = measure(
        lambda: case.client(client, con, client_table), ctx.repeat, case.inner
    )
    reference_table = plain_table if sample == size else tpch.first_rows(con, case.table, sample)
    reference = expected if sample == size else _expected(con, case, reference_table, names)
    check(case.name, "client_pyca", reference, answer)
    note = "pyca loop per cell, answer on client"
    if sample < size:
        note += f"; extrapolated from {sample} rows"
    rows.append(make_row(case.name, "client_pyca", client_times, size, note, scale=size / sample))
    decrypted = _decrypted_cells(case, size)
    ctx.cells[(case.name, size)] = (decrypted, 0)
    if decrypted:
        ctx.floor_seconds[(case.name, size)] = sum(
            size / _column_rate(ctx, case.table, column) for column in case.decrypts
        )
    return rows


_RATE_SAMPLE = 200_000


def _column_rate(ctx: Context, table: str, column: str) -> float:
    """Cells/s of the codec's batch decrypt (verify included, one thread) on the stored cells
    of ``table.column``: a DATE cell is one AES block, a DECIMAL two, a name three or more, so
    each column gets its own rate instead of the codec suite's 8-byte one."""
    name = f"{table}.{column}"
    if name not in ctx.column_rates:
        from enclave.binding import CellKey, decrypt_cells

        kind = tpch.ENCRYPTED[table][column][1]
        cells = (
            ctx.con.sql(
                f"SELECT {column} FROM {table}_enc WHERE {column} IS NOT NULL LIMIT {_RATE_SAMPLE}"
            )
            .to_arrow_table()[column]
            .combine_chunks()
            .cast(pa.binary())
        )
        with CellKey(ctx.keys.for_kind(kind)) as key:
            decrypt_cells(key, cells)  # warm-up
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                decrypt_cells(key, cells)
                runs.append(time.perf_counter() - start)
        ctx.column_rates[name] = len(cells) / sorted(runs)[1]
    return ctx.column_rates[name]


def _expected(
    con: duckdb.DuckDBPyConnection, case: QueryCase, table: str, names: dict[str, str]
) -> Any:
    return con.execute(case.sql.format(**{**names, case.table: table}), case.bind(names)).fetchall()


def _decrypted_cells(case: QueryCase, size: int) -> int:
    """The cells an enclave must decrypt for the case: every cell of its columns. A lookup or
    a join on deterministic cells decrypts only the few rows it returns; its floor is plaintext
    DuckDB itself, so it gets no codec floor (0)."""
    if case.name in ("point_lookup", "join"):
        return 0
    return size * len(case.decrypts)


# ---- the write cases -----------------------------------------------------------------------

BULK_COLUMNS = ("l_quantity", "l_extendedprice", "l_discount", "l_shipdate")


def run_bulk_load(ctx: Context) -> list[Row]:
    """Loading lineitem from Parquet: plaintext; 4 columns encrypted by the native codec
    (engine.encrypt_column, no SQL layer); and by a pyca loop (sampled, extrapolated)."""
    source = f"read_parquet('{ctx.parquet / 'lineitem.parquet'}')"
    target = duckdb.connect()
    target.execute(f"SET threads={THREADS}")
    plain_load = f"CREATE OR REPLACE TABLE loaded AS SELECT * FROM {source}"
    _, plain_times = measure(lambda: target.execute(plain_load), ctx.repeat)
    total = _table_rows(target, "loaded")
    rows = [make_row("bulk_load", "plaintext", plain_times, total, "Parquet -> DuckDB table")]
    if ctx.product is not None:
        rows.append(ctx.product.bulk_load_row(ctx.parquet, ctx.repeat))
    columns = {column: tpch.ENCRYPTED["lineitem"][column] for column in BULK_COLUMNS}

    def native() -> pa.Table:
        data = tpch.arrow_table(target.sql(f"SELECT * FROM {source}"))
        encrypted = tpch.encrypt_table(data, columns, ctx.keys)
        target.register("incoming", encrypted)
        target.execute("CREATE OR REPLACE TABLE loaded_enc AS SELECT * FROM incoming")
        target.unregister("incoming")
        return data

    data, native_times = measure(native, ctx.repeat)
    for column, (sql_type, _) in columns.items():
        cells = _column(target, "loaded_enc", column)[0]
        back = decrypt_column(cells, ctx.keys.randomized, sql_type, column=column)
        check_column("bulk_load", "native_codec", data[column], back)
    note = "engine.encrypt_column x4, no SQL layer"
    rows.append(make_row("bulk_load", "native_codec", native_times, total, note))

    client = PycaClient(ctx.keys)
    sample = min(total, ctx.pyca_sample)

    def pyca() -> pa.Table:
        data = tpch.arrow_table(target.sql(f"SELECT * FROM {source} LIMIT {sample}"))
        for column in BULK_COLUMNS:
            cells = client.encrypt(data[column], "lineitem", column)
            data = data.set_column(data.schema.get_field_index(column), column, cells)
        target.register("incoming", data)
        target.execute("CREATE OR REPLACE TABLE loaded_pyca AS SELECT * FROM incoming")
        target.unregister("incoming")
        return data

    _, pyca_times = measure(pyca, ctx.repeat)
    plain = tpch.arrow_table(target.sql(f"SELECT * FROM {source} LIMIT {sample}"))
    for column, (sql_type, _) in columns.items():
        cells = _column(target, "loaded_pyca", column)[0]
        back = decrypt_column(cells, ctx.keys.randomized, sql_type, column=column)
        check_column("bulk_load", "client_pyca", plain[column], back)
    note = f"pyca loop x4; extrapolated from {sample} rows" if sample < total else "pyca loop x4"
    rows.append(make_row("bulk_load", "client_pyca", pyca_times, total, note, scale=total / sample))
    target.close()
    ctx.cells[("bulk_load", total)] = (0, total * len(BULK_COLUMNS))
    return rows


def run_reencrypt(ctx: Context) -> list[Row]:
    """Re-encrypting lineitem.l_extendedprice under a new CEK and writing the column back."""
    con, column = ctx.con, "l_extendedprice"
    sql_type, kind = tpch.ENCRYPTED["lineitem"][column]
    new_key = os.urandom(32)
    total = _table_rows(con, "lineitem_enc")

    def native() -> pa.Array:
        cells = _column(con, "lineitem_enc", "l_rowid", column)
        values = decrypt_column(cells[column], ctx.keys.randomized, sql_type)
        fresh = encrypt_column(values, new_key, kind, sql_type, column=column)
        con.register("incoming", pa.table({"l_rowid": cells["l_rowid"], column: fresh}))
        con.execute("CREATE OR REPLACE TEMP TABLE reencrypted AS SELECT * FROM incoming")
        con.unregister("incoming")
        return fresh

    def check_written(variant: str, rows: int) -> None:
        # What was written back must decrypt under the new key to the plaintext of its row.
        written = tpch.arrow_table(con.sql(f"SELECT {column} FROM reencrypted ORDER BY l_rowid"))[
            column
        ]
        expected = tpch.arrow_table(
            con.sql(f"SELECT {column} FROM lineitem WHERE l_rowid < {rows} ORDER BY l_rowid")
        )[column]
        back = decrypt_column(written, new_key, sql_type, column=column)
        check_column("reencrypt", variant, expected, back)

    _, native_times = measure(native, ctx.repeat)
    check_written("native_codec", total)
    note = "decrypt+encrypt_column, column written back"
    rows = [make_row("reencrypt", "native_codec", native_times, total, note)]
    if ctx.product is not None:
        rows.append(ctx.product.reencrypt_row(con, ctx.repeat))

    sample = min(total, ctx.pyca_sample)
    old_codec, new_codec = ReferenceCodec(ctx.keys.randomized), ReferenceCodec(new_key)
    table = tpch.first_rows(con, "lineitem_enc", sample)

    def pyca() -> pa.Array:
        cells = _column(con, table, "l_rowid", column)
        fresh = pa.array(
            [
                new_codec.encrypt(old_codec.decrypt(c), os.urandom(16))
                for c in cells[column].to_pylist()
            ],
            type=pa.binary(),
        )
        con.register("incoming", pa.table({"l_rowid": cells["l_rowid"], column: fresh}))
        con.execute("CREATE OR REPLACE TEMP TABLE reencrypted AS SELECT * FROM incoming")
        con.unregister("incoming")
        return fresh

    _, pyca_times = measure(pyca, ctx.repeat)
    check_written("client_pyca", sample)
    note = "pyca loop" + (f"; extrapolated from {sample} rows" if sample < total else "")
    rows.append(make_row("reencrypt", "client_pyca", pyca_times, total, note, scale=total / sample))
    ctx.cells[("reencrypt", total)] = (total, total)
    return rows


# ---- the floor computed from the codec rate, and the whole baseline suite -------------------


def codec_floor_rows(
    cells: dict[tuple[str, int], tuple[int, int]],
    codec: dict[str, Any],
    floor_seconds: dict[tuple[str, int], float] | None = None,
) -> list[Row]:
    """Rows of the time the fast codec (else the portable one) needs for each case's cells:
    the query cases' decrypts at each column's measured rate (``floor_seconds``), the others
    at the codec suite's 8-byte rate.

    >>> codec = {"results": {"fast": {"decrypt": {"median": 10.0},
    ...                               "encrypt_randomized": {"median": 5.0}}}}
    >>> codec_floor_rows({("q6", 100): (1_000_000, 0)}, codec)[0]["median_s"]
    0.1
    >>> codec_floor_rows({("q6", 100): (1_000_000, 0)}, codec, {("q6", 100): 0.25})[0]["median_s"]
    0.25
    """
    results = codec.get("results", {})
    best = results.get("fast") or results.get("portable")
    if not best:
        return []
    decrypt = best["decrypt"]["median"] * 1e6
    encrypt = best["encrypt_randomized"]["median"] * 1e6
    rows = []
    for (case, size), (decrypted, encrypted) in cells.items():
        if decrypted == 0 and encrypted == 0:
            continue
        measured = (floor_seconds or {}).get((case, size))
        if measured is not None and encrypted == 0:
            seconds = measured
            note = f"{decrypted} decrypts at each column's own measured decrypt rate, one core"
        else:
            seconds = decrypted / decrypt + encrypted / encrypt
            note = f"{decrypted} decrypts + {encrypted} encrypts at the codec's rate, one core"
        rows.append(make_row(case, "codec_floor", [seconds], size, note))
    return rows


def run(
    ctx: Context, only: Sequence[str] = CASE_NAMES, log: Callable[[str], None] = print
) -> list[Row]:
    """Every selected baseline case, with the cost-growth sizes of GROWTH_CASES."""
    unknown = set(only) - set(CASE_NAMES)
    if unknown:
        raise ValueError(f"unknown cases {sorted(unknown)}; the cases are {', '.join(CASE_NAMES)}")
    rows: list[Row] = []
    lineitem_rows = _table_rows(ctx.con, "lineitem")
    for case in QUERY_CASES:
        if case.name not in only:
            continue
        sizes = tpch.sizes(lineitem_rows) if ctx.growth and case.name in GROWTH_CASES else [None]
        for size in sizes:
            log(f"bench: {case.name}" + (f" at {size} rows" if size else ""))
            rows += run_query_case(ctx, case, size)
    if "bulk_load" in only:
        log("bench: bulk_load")
        rows += run_bulk_load(ctx)
    if "reencrypt" in only:
        log("bench: reencrypt")
        rows += run_reencrypt(ctx)
    return rows

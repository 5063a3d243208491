"""The small-result path (engine.client.small_results: Python column lists, Arrow built only on
request) against the Arrow path it replaces: the same rows, description, Arrow table, pandas
frame, fetch order, NULLs and errors for every encrypted type and a range of plaintext types,
with column_encryption off, for tampered cells, and past the small-result limit."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytest.importorskip("enclave.binding", reason="the native codec (enclave.binding) is not built")

import engine  # noqa: E402
import engine.client.small_results as small_results  # noqa: E402
from engine import errors  # noqa: E402
from engine.client.codec import SMALL_VALUES  # noqa: E402
from tests.support.keys import CEK1_KEYS, make_pem_keys  # noqa: E402

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
# Declared type -> three values (one None is added per column by the row layout).
ENCRYPTED: dict[str, list[Any]] = {
    "BOOLEAN": [True, False, True],
    "TINYINT": [-128, 0, 127],
    "INTEGER": [-(2**31), 7, 2**31 - 1],
    "BIGINT": [-(2**63), 0, 2**63 - 1],
    "UBIGINT": [0, 1, 2**63 - 1],
    "REAL": [1.5, -0.1, 3.4e38],
    "DOUBLE": [0.1, -2.5e-300, 1e300],
    "DECIMAL(15,2)": [Decimal("1.5"), Decimal("-99999.99"), Decimal("0")],
    "DECIMAL(38,10)": [Decimal("12345678901234567890.0123456789"), Decimal("-1"), Decimal("0.1")],
    "DATE": [dt.date(1, 1, 1), dt.date(2024, 2, 29), dt.date(9999, 12, 31)],
    "TIME": [dt.time(0, 0), dt.time(12, 30, 1, 123456), dt.time(23, 59, 59, 999999)],
    "TIMESTAMP": [
        dt.datetime(1970, 1, 1),
        dt.datetime(2024, 2, 29, 1, 2, 3, 456789),
        dt.datetime(1, 1, 1),
    ],
    "TIMESTAMP(3)": [dt.datetime(2000, 1, 1, 0, 0, 0, 123000)] * 3,
    "TIMESTAMPTZ": [
        dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ],
    "VARCHAR": ["Zoë", "", "日本語 ✓ \U0001f600"],
    "NVARCHAR(20)": ["Ünïcödé", "a", "\u00e9t\u00e9"],
    "CHAR(11)": ["123-45-6789", "x", "ÄÖÜ"],
    "BLOB": [b"\x00\xff", b"", b"abc"],
    "UUID": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()],
}
PLAIN = (
    "p_int INTEGER, p_huge HUGEINT, p_dec DECIMAL(18,3), p_text VARCHAR, p_uuid UUID, "
    "p_interval INTERVAL, p_list INTEGER[], p_struct STRUCT(a INT, b VARCHAR), "
    "p_map MAP(VARCHAR, INTEGER), p_ts TIMESTAMPTZ, p_blob BLOB"
)
PLAIN_ROWS = (
    "(0, 1, 170141183460469231731687303715884105727, 1.5, 'Zoë', "
    "'00000000-0000-0000-0000-000000000001', INTERVAL 1 MONTH + INTERVAL 3 DAY, [1, NULL], "
    "{'a': 1, 'b': 'x'}, MAP {'k': 1}, TIMESTAMPTZ '2024-01-01 12:00:00+00', '\\x01'::BLOB)"
)


def _column(name: str) -> str:
    return "e_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower())


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("small-results")
    key_dir = make_pem_keys(directory / "keys", "cmk.pem")
    path = directory / "small.duckdb"
    with engine.connect(str(path), key_dir=str(key_dir)) as con:
        for statement in CEK1_KEYS:
            con.execute(statement)
        columns = []
        for type_name in ENCRYPTED:
            columns.append(f"{_column(type_name)} {type_name} {ENC.format('RANDOMIZED')}")
            columns.append(f"{_column(type_name)}_d {type_name} {ENC.format('DETERMINISTIC')}")
        con.execute(f"CREATE TABLE t (id INTEGER, {', '.join(columns)})")
        con.execute(f"CREATE TABLE plain (id INTEGER, {PLAIN})")
        marks = ", ".join("?" for _ in range(1 + 2 * len(ENCRYPTED)))
        for row in range(4):  # row 3: every encrypted value NULL
            values: list[Any] = [row]
            for type_values in ENCRYPTED.values():
                value = type_values[row] if row < 3 else None
                values += [value, value]
            con.execute(f"INSERT INTO t VALUES ({marks})", values)
        con.execute(f"INSERT INTO plain VALUES {PLAIN_ROWS}")
        con.execute(f"INSERT INTO plain SELECT {', '.join(['NULL'] * 12)}")
        con.execute("INSERT INTO plain (id) SELECT range + 10 FROM range(40)")
    yield path, key_dir


@pytest.fixture()
def con(database: tuple[Path, Path]) -> Iterator[engine.Connection]:
    path, key_dir = database
    connection = engine.connect(str(path), key_dir=str(key_dir))
    yield connection
    connection.close()


def _both(monkeypatch: pytest.MonkeyPatch, work: Callable[[], Any]) -> tuple[Any, Any]:
    """``work`` on the small path, then with the small path switched off (the Arrow path)."""
    small = work()
    with monkeypatch.context() as patch:
        patch.setattr(small_results, "SMALL_VALUES", -1)
        arrow = work()
    return small, arrow


def _taken(monkeypatch: pytest.MonkeyPatch, con: engine.Connection, sql: str) -> bool:
    """Whether ``sql`` takes the small path (a spy on engine.client.small_results)."""
    seen: list[bool] = []
    original = small_results.small_result

    def spy(*args: Any) -> Any:
        result = original(*args)
        seen.append(result is not None)
        return result

    with monkeypatch.context() as patch:
        patch.setattr("engine.client.client.small_result", spy)
        con.execute(sql).fetchall()
    return seen == [True]


QUERIES = [
    "SELECT * FROM t ORDER BY id",
    "SELECT * FROM t WHERE id = 1",
    "SELECT * FROM t WHERE id = -1",  # no rows
    "SELECT e_varchar AS renamed, id, e_decimal_15_2_ FROM t ORDER BY id DESC",
    "SELECT * FROM plain ORDER BY id LIMIT 3",
    "SELECT * FROM plain ORDER BY id",  # more rows than the small path takes
]


@pytest.mark.parametrize("sql", QUERIES)
def test_rows_description_and_arrow_match_the_arrow_path(
    monkeypatch: pytest.MonkeyPatch, con: engine.Connection, sql: str
) -> None:
    def run() -> tuple[Any, ...]:
        cur = con.cursor()
        rows = cur.execute(sql).fetchall()
        table = cur.execute(sql).fetch_arrow_table()
        frame = cur.execute(sql).fetchdf()
        cur.execute(sql)
        one, many = cur.fetchone(), cur.fetchmany(2)
        rest = list(cur)
        after = cur.fetch_arrow_table()
        return (
            rows,
            cur.description,
            cur.encrypted_columns,
            cur.rowcount,
            table,
            frame,
            one,
            many,
            rest,
            after,
        )

    small, arrow = _both(monkeypatch, run)
    rows, description, encrypted, rowcount, table, frame, one, many, rest, after = small
    assert repr(rows) == repr(arrow[0])  # same values and the same Python types
    assert [type(v) for row in rows for v in row] == [type(v) for row in arrow[0] for v in row]
    assert (description, encrypted, rowcount) == arrow[1:4]
    assert table.equals(arrow[4], check_metadata=True) and table.schema == arrow[4].schema
    assert frame.equals(arrow[5]) and list(frame.dtypes) == list(arrow[5].dtypes)
    assert repr((one, many, rest)) == repr(arrow[6:9])
    assert after.num_rows == 0 and after.schema == arrow[9].schema
    small_rows = len(rows) <= SMALL_VALUES
    assert _taken(monkeypatch, con, sql) is small_rows


def test_encrypted_values_are_the_values_inserted(con: engine.Connection) -> None:
    rows = con.execute("SELECT * FROM t ORDER BY id").fetchall()
    for index, values in enumerate(ENCRYPTED.values()):
        for row in range(3):
            got = rows[row][1 + 2 * index]
            assert got == rows[row][2 + 2 * index]
            if isinstance(values[row], float):
                assert got == pytest.approx(values[row], rel=1e-6)
            else:
                assert got == values[row]
        assert rows[3][1 + 2 * index] is None


def test_plaintext_rows_match_duckdb(database: tuple[Path, Path]) -> None:
    queries = ("SELECT * FROM plain ORDER BY id LIMIT 3", "SELECT * FROM plain ORDER BY id")
    with engine.connect(str(database[0]), key_dir=str(database[1])) as con:
        ours = [con.execute(sql).fetchall() for sql in queries]
    raw = duckdb.connect(str(database[0]))
    try:
        assert ours == [raw.execute(sql).fetchall() for sql in queries]
    finally:
        raw.close()


def test_column_encryption_off_gives_the_cells(
    monkeypatch: pytest.MonkeyPatch, database: tuple[Path, Path]
) -> None:
    path, key_dir = database

    def run() -> tuple[Any, ...]:
        with engine.connect(str(path), key_dir=str(key_dir), column_encryption=False) as con:
            cur = con.execute("SELECT id, e_varchar, e_uuid_d FROM t ORDER BY id")
            return (
                cur.fetchall(),
                cur.description,
                cur.execute("SELECT id, e_varchar FROM t ORDER BY id").fetch_arrow_table(),
            )

    small, arrow = _both(monkeypatch, run)
    assert small[0] == arrow[0] and small[1] == arrow[1] and small[2].equals(arrow[2])
    assert all(isinstance(row[1], bytes) for row in small[0][:3])
    assert small[0][3][1] is None


def test_a_tampered_cell_raises_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database: tuple[Path, Path]
) -> None:
    path, key_dir = database
    copy = tmp_path / "tampered.duckdb"
    copy.write_bytes(path.read_bytes())
    raw = duckdb.connect(str(copy))
    cell = bytearray(raw.execute("SELECT e_varchar FROM t WHERE id = 1").fetchone()[0])
    cell[-1] ^= 1
    raw.execute("UPDATE t SET e_varchar = ? WHERE id = 1", [bytes(cell)])
    raw.close()

    def run() -> str:
        with engine.connect(str(copy), key_dir=str(key_dir)) as con:
            with pytest.raises(errors.CellAuthenticationError) as raised:
                con.execute("SELECT id, e_varchar FROM t WHERE id = 1")
            assert con.execute("SELECT id FROM t WHERE id = 1").fetchall() == [(1,)]
            return str(raised.value)

    small, arrow = _both(monkeypatch, run)
    assert small == arrow == errors.CellAuthenticationError.MESSAGE

"""bulk_insert's streamed, parallel path: Arrow, pandas and tuples with NULLs in every supported
type, under both encryption types, read back as plaintext DuckDB stores them; a failure in a
late batch leaves nothing behind and raises the encryption's own error; the progress bar counts
every row."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import engine
from engine import errors
from tests.support.keys import CEK1_KEYS, make_cmk

TYPES = {
    "c_tinyint": "TINYINT",
    "c_smallint": "SMALLINT",
    "c_int": "INTEGER",
    "c_bigint": "BIGINT",
    "c_bool": "BOOLEAN",
    "c_real": "REAL",
    "c_double": "DOUBLE",
    "c_decimal": "DECIMAL(18,4)",
    "c_date": "DATE",
    "c_time": "TIME",
    "c_ts": "TIMESTAMP",
    "c_tstz": "TIMESTAMPTZ",
    "c_varchar": "VARCHAR",
    "c_nvarchar": "NVARCHAR(30)",
    "c_blob": "BLOB",
    "c_uuid": "UUID",
}
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
# DuckDB's Arrow export of UUID is not taken by the client's normalization yet (a DataError
# that names the column), so the Arrow and pandas sources leave that column out.
ARROW_SOURCE = "SELECT * EXCLUDE (c_uuid) FROM r"
BATCH = 37  # many small batches: the stream and its thread pool carry most of the rows


def _value(column: str, i: int) -> object:
    day = datetime.date(1990, 1, 1) + datetime.timedelta(days=i * 13)
    return {
        "c_tinyint": i % 200 - 100,
        "c_smallint": i * 31 - 9000,
        "c_int": i * 7919 - 10**6,
        "c_bigint": i * 10**12 - 7,
        "c_bool": i % 3 == 0,
        "c_real": i / 8,
        "c_double": i * 1.25e-3,
        "c_decimal": decimal.Decimal(i * 12345) / 100,
        "c_date": day,
        "c_time": datetime.time(i % 24, i % 60, i % 59, (i * 997) % 10**6),
        "c_ts": datetime.datetime(2020, 5, 17, 3, 4, 5) + datetime.timedelta(seconds=i * 7919),
        "c_tstz": datetime.datetime(2021, 1, 2, tzinfo=datetime.UTC)
        + datetime.timedelta(minutes=i * 97),
        "c_varchar": f"row {i} ''quoted'' ünï",
        "c_nvarchar": f"Ærø {i} 😀",
        "c_blob": bytes([i % 256, 0, 255]) * (i % 4),
        "c_uuid": uuid.UUID(int=i * 2**64 + 17),
    }[column]


# Each column is NULL on its own rows (i % 5 == column number % 5), and row 3 is all NULLs.
ROWS = [
    (i, *(None if i == 3 or i % 5 == n % 5 else _value(c, i) for n, c in enumerate(TYPES)))
    for i in range(300)
]


def _create(encryption_type: str, name: str) -> str:
    columns = ", ".join(f"{c} {t} {ENC.format(encryption_type)}" for c, t in TYPES.items())
    return f"CREATE TABLE {name} (id INTEGER, {columns})"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bulk-keys")
    make_cmk(directory)
    return directory


@pytest.fixture()
def connection(key_dir: Path) -> Iterator[engine.Connection]:
    con = engine.connect(":memory:", key_dir=str(key_dir))
    for statement in CEK1_KEYS:
        con.execute(statement)
    yield con
    con.close()


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f"{c} {t.replace('NVARCHAR(30)', 'VARCHAR')}" for c, t in TYPES.items())
    con.execute(f"CREATE TABLE r (id INTEGER, {columns})")
    con.executemany(f"INSERT INTO r VALUES ({', '.join('?' * (len(TYPES) + 1))})", ROWS)
    yield con
    con.close()


def _stored(
    con: engine.Connection | duckdb.DuckDBPyConnection, table: str, columns: str = "*"
) -> list[tuple]:
    return con.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()


@pytest.mark.parametrize("encryption_type", ["DETERMINISTIC", "RANDOMIZED"])
def test_tuples_arrow_and_pandas_match_plaintext_duckdb(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection, encryption_type: str
) -> None:
    expected = _stored(oracle, "r")
    assert any(None in row for row in expected) and expected[3][1:] == (None,) * len(TYPES)
    sources = {
        "from_tuples": ROWS,
        "from_arrow": oracle.sql(ARROW_SOURCE).to_arrow_table(),
        "from_pandas": oracle.sql(ARROW_SOURCE).df(),
    }
    for name, data in sources.items():
        connection.execute(_create(encryption_type, name))
        assert connection.bulk_insert(name, data, batch_rows=BATCH, progress=False) == len(ROWS)
        if name == "from_tuples":
            assert _stored(connection, name) == expected
        else:
            without = "* EXCLUDE (c_uuid)"
            assert _stored(connection, name, without) == _stored(oracle, "r", without), name


def test_a_bad_value_in_a_late_batch_leaves_nothing(connection: engine.Connection) -> None:
    connection.execute(_create("RANDOMIZED", "r"))
    rows = [(i, *([None] * len(TYPES))) for i in range(400)]
    # Row 390 (in the eleventh batch) has text where an INTEGER goes.
    rows[390] = (390, *(("not a number" if c == "c_int" else None) for c in TYPES))
    with pytest.raises(errors.DataError, match="c_int"):
        connection.bulk_insert("r", rows, batch_rows=BATCH, progress=False)
    assert connection.execute("SELECT count(*) FROM r").fetchone() == (0,)
    # The connection works on: the next load goes in whole.
    assert connection.bulk_insert("r", rows[:389], batch_rows=BATCH, progress=False) == 389
    assert connection.execute("SELECT count(*), max(id) FROM r").fetchone() == (389, 388)


def test_plain_values_of_mixed_types_are_refused(connection: engine.Connection) -> None:
    connection.execute(_create("RANDOMIZED", "r"))
    with pytest.raises(errors.ProgrammingError, match="do not share one type"):
        connection.bulk_insert("r", [(1, *([None] * len(TYPES))), ("two", *([None] * len(TYPES)))])
    assert connection.execute("SELECT count(*) FROM r").fetchone() == (0,)


def test_progress_bar_counts_every_row(
    connection: engine.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    connection.execute(_create("DETERMINISTIC", "r"))
    assert connection.bulk_insert("r", ROWS, batch_rows=BATCH, progress=True) == len(ROWS)
    err = capsys.readouterr().err
    assert "insert r" in err and f"{len(ROWS)}/{len(ROWS)}" in err


def test_one_batch_and_arrow_record_batches(connection: engine.Connection) -> None:
    connection.execute(_create("DETERMINISTIC", "r"))
    data = pa.table(
        {"id": pa.array([1, 2], pa.int32()), "c_varchar": ["a", None], "c_int": [None, 5]}
    )
    assert connection.bulk_insert("r", data.to_batches()[0], progress=False) == 2
    assert connection.execute("SELECT id, c_varchar, c_int FROM r ORDER BY id").fetchall() == [
        (1, "a", None),
        (2, None, 5),
    ]


def test_executemany_encrypts_its_columns_in_parallel(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection
) -> None:
    from engine.client.parameters import _PARALLEL_ROWS

    connection.execute(_create("RANDOMIZED", "r"))
    many = [(i, *ROWS[i % len(ROWS)][1:]) for i in range(_PARALLEL_ROWS + 7)]
    marks = ", ".join("?" * (len(TYPES) + 1))
    connection.cursor().executemany(f"INSERT INTO r VALUES ({marks})", many)
    # Row i holds the values of the oracle's row i % len(ROWS), as DuckDB stored them.
    stored = {row[0]: row[1:] for row in _stored(oracle, "r")}
    assert _stored(connection, "r") == [(i, *stored[i % len(ROWS)]) for i in range(len(many))]
    # A row of the wrong width is refused before anything is encrypted or inserted.
    with pytest.raises(errors.ProgrammingError, match="parameter marker"):
        connection.cursor().executemany(f"INSERT INTO r VALUES ({marks})", [*many[:5], (1, 2)])
    assert connection.execute("SELECT count(*) FROM r").fetchone() == (len(many),)

"""The ciphertext checkpoint around bulk inserts: while a batch of cells is inserted and
committed, DuckDB's force_compression is 'uncompressed'; the caller's setting is back after
every exit, success or failure; plaintext-only tables are left to DuckDB's compression; the
rows read back from the file after reopening it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import engine
from engine import errors
from engine.host.host import Host
from tests.support.keys import CEK1_KEYS, make_cmk

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = [(i, f"SSN-{i:05d}", f"note {i}", i * 3 - 7) for i in range(400)]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cmk(tmp_path_factory.mktemp("checkpoint-keys"))


@pytest.fixture()
def database(tmp_path: Path) -> str:
    return str(tmp_path / "bulk.duckdb")


@pytest.fixture()
def connection(key_dir: Path, database: str) -> Iterator[engine.Connection]:
    con = engine.connect(database, key_dir=str(key_dir))
    for statement in CEK1_KEYS:
        con.execute(statement)
    con.execute(
        f"CREATE TABLE t (id INTEGER, ssn VARCHAR {ENC.format('DETERMINISTIC')} UNIQUE, "
        f"note VARCHAR {ENC.format('RANDOMIZED')}, n INTEGER)"
    )
    con.execute("CREATE TABLE p (id INTEGER, ssn VARCHAR, note VARCHAR, n INTEGER)")
    yield con
    con.close()


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """force_compression as DuckDB has it at the moment each insert statement runs."""
    settings: list[str] = []
    original = Host._insert_from_view

    def spy(self: Host, sql: str, view: str, data: pa.Table | pa.RecordBatchReader) -> int:
        settings.append(_setting(self))
        return original(self, sql, view, data)

    monkeypatch.setattr(Host, "_insert_from_view", spy)
    return settings


def _setting(host: Host) -> str:
    return str(host._con.execute("SELECT current_setting('force_compression')").fetchall()[0][0])


def _host(con: engine.Connection) -> Host:
    host = con._host
    assert isinstance(host, Host)
    return host


@pytest.mark.parametrize("before", ["auto", "dictionary"])
def test_bulk_insert_of_cells_checkpoints_uncompressed_and_restores(
    connection: engine.Connection, seen: list[str], before: str
) -> None:
    _host(connection)._con.execute(f"SET force_compression = '{before}'")
    assert connection.bulk_insert("t", ROWS, progress=False) == len(ROWS)
    assert seen and set(seen) == {"uncompressed"}
    assert _setting(_host(connection)) == before


def test_plaintext_table_keeps_duckdb_compression(
    connection: engine.Connection, seen: list[str]
) -> None:
    assert connection.bulk_insert("p", ROWS, progress=False) == len(ROWS)
    assert seen and set(seen) == {"auto"}


def test_executemany_of_cells_checkpoints_uncompressed_and_restores(
    connection: engine.Connection, seen: list[str]
) -> None:
    connection.cursor().executemany("INSERT INTO t VALUES (?, ?, ?, ?)", ROWS[:50])
    assert seen == ["uncompressed"]
    assert _setting(_host(connection)) == "auto"
    assert connection.execute("SELECT count(*) FROM t").fetchall() == [(50,)]


def test_setting_is_restored_when_the_insert_fails(
    connection: engine.Connection, seen: list[str]
) -> None:
    connection.bulk_insert("t", ROWS[:10], progress=False)
    # The same ssn again violates UNIQUE inside DuckDB, after the setting was changed.
    with pytest.raises(errors.IntegrityError):
        connection.bulk_insert("t", ROWS[5:20], progress=False)
    assert seen == ["uncompressed", "uncompressed"]
    assert _setting(_host(connection)) == "auto"
    assert connection.execute("SELECT count(*) FROM t").fetchall() == [(10,)]


def test_rows_round_trip_through_the_file(
    connection: engine.Connection, key_dir: Path, database: str
) -> None:
    # Enough rows for DuckDB to write whole row groups to the file during the insert.
    rows = [(i, f"SSN-{i:07d}", f"note {i % 97}", i) for i in range(130_000)]
    columns = ("id", "ssn", "note", "n")
    table = pa.table({name: [row[j] for row in rows] for j, name in enumerate(columns)})
    assert connection.bulk_insert("t", table, progress=False) == len(rows)
    connection.close()
    again = engine.connect(database, key_dir=str(key_dir))
    try:
        got = again.execute("SELECT id, ssn, note, n FROM t ORDER BY id").fetchall()
        assert got == rows
        assert again.execute("SELECT id FROM t WHERE ssn = ?", ["SSN-0123456"]).fetchall() == [
            (123_456,)
        ]
    finally:
        again.close()


def test_inside_the_callers_transaction_the_setting_is_left_alone(
    connection: engine.Connection, seen: list[str]
) -> None:
    # DuckDB refuses SET in an aborted transaction, so changing the setting there could not be
    # undone after a failure; the insert runs with the caller's setting instead.
    connection.bulk_insert("t", ROWS[:10], progress=False)
    connection.execute("BEGIN TRANSACTION")
    with pytest.raises(errors.IntegrityError):
        connection.bulk_insert("t", ROWS[5:20], progress=False)
    connection.rollback()
    assert seen == ["uncompressed", "auto"]
    assert _setting(_host(connection)) == "auto"
    assert connection.execute("SELECT count(*) FROM t").fetchall() == [(10,)]

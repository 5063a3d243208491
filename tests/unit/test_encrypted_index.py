"""CREATE INDEX on tables with encrypted columns: DuckDB's ART index over a deterministic
column is allowed and used by point lookups (same answers as without it); randomized columns
and expressions over encrypted columns are refused with NotSupportedError."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine import errors
from tests.support.keys import CEK1_KEYS, make_cmk

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = [(i, f"SSN-{i % 50}", i * 10) for i in range(300)]


@pytest.fixture()
def connection(tmp_path: Path) -> Iterator[engine.Connection]:
    make_cmk(tmp_path)
    con = engine.connect(":memory:", key_dir=str(tmp_path))
    for statement in CEK1_KEYS:
        con.execute(statement)
    con.execute(
        f"CREATE TABLE t (id INTEGER, ssn VARCHAR {ENC.format('DETERMINISTIC')}, "
        f"pay BIGINT {ENC.format('RANDOMIZED')})"
    )
    con.bulk_insert("t", ROWS, progress=False)
    yield con
    con.close()


def _lookup(con: engine.Connection, ssn: str) -> list[tuple[object, ...]]:
    return sorted(con.execute("SELECT id, pay FROM t WHERE ssn = ?", [ssn]).fetchall())


def test_index_on_a_deterministic_column_is_used_and_answers_match(
    connection: engine.Connection,
) -> None:
    before = {ssn: _lookup(connection, ssn) for ssn in ("SSN-7", "SSN-49", "nobody")}
    duck = connection._host._con  # type: ignore[attr-defined]
    cell = duck.execute("SELECT ssn FROM t WHERE id = 7").fetchone()[0]
    profile = "EXPLAIN ANALYZE SELECT id FROM t WHERE ssn = ?"
    assert "Type: Index Scan" not in duck.execute(profile, [cell]).fetchall()[0][1]
    connection.execute("CREATE INDEX t_ssn ON t (ssn)")
    for ssn, rows in before.items():
        assert _lookup(connection, ssn) == rows
        assert rows == sorted((i, p) for i, s, p in ROWS if s == ssn)
    # DuckDB's profile of the host's statement (the ciphertext of a stored cell as the
    # parameter, as the client would send it) shows that the scan used the index.
    assert "Type: Index Scan" in duck.execute(profile, [cell]).fetchall()[0][1]
    # Writes after the index keep it in step.
    connection.execute("INSERT INTO t VALUES (1000, 'SSN-7', 5)")
    assert _lookup(connection, "SSN-7")[-1] == (1000, 5)
    connection.execute("DROP INDEX t_ssn")
    assert len(_lookup(connection, "SSN-7")) == len(before["SSN-7"]) + 1


def test_unique_index_on_a_deterministic_column_rejects_duplicates(
    connection: engine.Connection,
) -> None:
    connection.execute("CREATE UNIQUE INDEX t_id_ssn ON t (id, ssn)")
    with pytest.raises(errors.IntegrityError):
        connection.execute("INSERT INTO t VALUES (7, 'SSN-7', 1)")
    with pytest.raises(errors.DatabaseError):
        connection.execute("CREATE UNIQUE INDEX t_ssn ON t (ssn)")  # SSN-7 is there 6 times


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("CREATE INDEX bad ON t (pay)", "randomized column t.pay"),
        ("CREATE INDEX bad ON t (id, pay)", "randomized column t.pay"),
        ("CREATE INDEX bad ON t (lower(ssn))", "expression of the encrypted column t.ssn"),
    ],
)
def test_indexes_that_cannot_work_are_refused(
    connection: engine.Connection, statement: str, message: str
) -> None:
    with pytest.raises(errors.NotSupportedError, match=message):
        connection.execute(statement)
    connection.execute("CREATE INDEX fine ON t (id)")  # plaintext columns still index

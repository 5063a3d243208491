"""The DB-API surface on encrypted columns: description types, column_encryption=False, the
vectorized executemany and bulk_insert paths and their atomicity, the describe cache, tampered
and swapped cells, trusted key paths, and messages that never carry values."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import engine
from engine import errors
from engine.client.cek_envelope import EnvelopeAuthenticationError
from tests.support.keys import make_pem_keys

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
TABLE = (
    "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR, "
    f"ssn CHAR(11) {ENC.format('cek1', 'DETERMINISTIC')} UNIQUE, "
    f"salary DECIMAL(10,2) {ENC.format('cek1', 'RANDOMIZED')}, "
    f"other_ssn CHAR(11) {ENC.format('cek2', 'DETERMINISTIC')})"
)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dbapi-keys")
    return make_pem_keys(directory, "cmk.pem")


def _open(path: Path, key_dir: Path, **options: object) -> engine.Connection:
    return engine.connect(str(path), key_dir=str(key_dir), **options)


@pytest.fixture()
def database(tmp_path: Path, key_dir: Path) -> Path:
    path = tmp_path / "enc.duckdb"
    with _open(path, key_dir) as connection:
        connection.execute(
            "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'cmk.pem')"
        )
        for cek in ("cek1", "cek2"):
            connection.execute(
                f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
                "ALGORITHM = 'RSA_OAEP')"
            )
        connection.execute(TABLE)
        connection.execute(
            "INSERT INTO p VALUES (1, 'Ada', '123-45-6789', 10.5, '123-45-6789'), "
            "(2, 'Bob', '987-65-4321', NULL, NULL)"
        )
    return path


@pytest.fixture()
def con(database: Path, key_dir: Path) -> engine.Connection:
    connection = _open(database, key_dir)
    yield connection
    connection.close()


def _count(connection: engine.Connection) -> int:
    return connection.execute("SELECT count(*) FROM p").fetchone()[0]


def test_description_gives_declared_types_of_encrypted_columns(con: engine.Connection) -> None:
    cursor = con.execute("SELECT id, ssn, salary FROM p ORDER BY id")
    assert [c[:2] for c in cursor.description] == [
        ("id", "INTEGER"),
        ("ssn", "VARCHAR(11)"),
        ("salary", "DECIMAL(10,2)"),
    ]
    assert cursor.description[1][1] == engine.STRING
    assert cursor.description[2][1] == engine.NUMBER
    assert cursor.encrypted_columns == (False, True, True)
    assert str(cursor.fetchone()[2]) == "10.50"


def test_describe_statement_shows_declared_types(con: engine.Connection) -> None:
    rows = con.execute("DESCRIBE p").fetchall()
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("id", "INTEGER", "NO"),
        ("name", "VARCHAR", "YES"),
        ("ssn", "VARCHAR(11)", "YES"),
        ("salary", "DECIMAL(10,2)", "YES"),
        ("other_ssn", "VARCHAR(11)", "YES"),
    ]


def test_column_encryption_off_returns_ciphertext_and_refuses_values(
    database: Path, key_dir: Path
) -> None:
    with _open(database, key_dir, column_encryption=False) as connection:
        cursor = connection.execute("SELECT id, ssn FROM p ORDER BY id")
        assert cursor.description[1][1] == "BLOB" and cursor.description[1][1] == engine.BINARY
        (one, cell), (two, _) = cursor.fetchall()
        assert isinstance(cell, bytes) and cell[0] == 1 and len(cell) == 65
        assert b"123-45-6789" not in cell
        # Deterministic ciphertext can still be copied or compared in SQL, never plaintext.
        with pytest.raises(errors.ProgrammingError, match="column_encryption=True"):
            connection.execute("SELECT id FROM p WHERE ssn = ?", ["123-45-6789"])
        with pytest.raises(errors.ProgrammingError, match="column_encryption=True"):
            connection.execute("UPDATE p SET ssn = '000-00-0000' WHERE id = 1")
        assert connection.execute("SELECT name FROM p WHERE id = ?", [2]).fetchall() == [("Bob",)]


def test_executemany_encrypts_columns_and_is_atomic(con: engine.Connection) -> None:
    rows = [(10 + i, f"n{i}", f"{i:03d}-00-0000", i * 1.25, None) for i in range(50)]
    con.cursor().executemany("INSERT INTO p VALUES (?, ?, ?, ?, ?)", rows)
    assert _count(con) == 52
    assert con.execute("SELECT id FROM p WHERE ssn = '007-00-0000'").fetchall() == [(17,)]
    # A duplicate deterministic ciphertext violates UNIQUE: nothing of the batch stays.
    with pytest.raises(errors.IntegrityError) as raised:
        con.cursor().executemany(
            "INSERT INTO p (id, ssn) VALUES (?, ?)", [(100, "new-1"), (101, "123-45-6789")]
        )
    assert "123-45-6789" not in str(raised.value)
    # A value that cannot be encoded fails before anything reaches the host.
    with pytest.raises(errors.DataError, match=r"p\.salary") as raised:
        con.cursor().executemany(
            "INSERT INTO p (id, salary) VALUES (?, ?)", [(102, 1), (103, "lots of money")]
        )
    assert "lots of money" not in str(raised.value)
    assert _count(con) == 52


def test_bulk_insert_batches_and_atomicity(con: engine.Connection) -> None:
    rows = [(100 + i, None, f"b{i}", i, f"o{i}") for i in range(25)]
    assert con.bulk_insert("p", rows, batch_rows=4) == 25
    assert con.execute("SELECT ssn, other_ssn FROM p WHERE id = 124").fetchall() == [("b24", "o24")]
    table = pa.table({"ID": [200, 201], "SSN": ["x1", "x2"], "salary": [1.5, None]})
    assert con.bulk_insert("p", table) == 2
    assert con.execute("SELECT id FROM p WHERE ssn = 'x2'").fetchall() == [(201,)]
    before = _count(con)
    with pytest.raises(errors.DataError, match=r"p\.salary"):
        con.bulk_insert("p", [(300, None, "ok", 1, None), (301, None, "bad", "NaN?", None)])
    with pytest.raises(errors.IntegrityError):
        con.bulk_insert("p", [(302, None, "fresh", 1, None), (1, None, "dup-id", 1, None)])
    assert _count(con) == before


def test_describe_cache_hits_and_invalidation(con: engine.Connection) -> None:
    statistics = con._host.statistics
    sql = "SELECT name FROM p WHERE ssn = ?"
    con.execute(sql, ["123-45-6789"])
    hits, misses = statistics()["describe_hits"], statistics()["describe_misses"]
    assert con.execute(sql, ["987-65-4321"]).fetchall() == [("Bob",)]
    assert statistics()["describe_hits"] == hits + 1
    assert statistics()["describe_misses"] == misses
    con.execute("CREATE TABLE unrelated (x INT)")
    assert con.execute(sql, ["123-45-6789"]).fetchall() == [("Ada",)]
    assert statistics()["describe_misses"] == misses + 2  # the CREATE, then the query again


def test_tampered_and_swapped_cells_raise_cell_authentication_error(
    database: Path, key_dir: Path
) -> None:
    raw = duckdb.connect(str(database))
    cell = bytearray(raw.execute("SELECT ssn FROM p WHERE id = 1").fetchone()[0])
    cell[-1] ^= 1
    raw.execute("UPDATE p SET ssn = ? WHERE id = 1", [bytes(cell)])
    # A valid cell under another key (row 1's other_ssn), but not for this column.
    raw.execute("UPDATE p SET ssn = (SELECT other_ssn FROM p WHERE id = 1) WHERE id = 2")
    raw.close()
    with _open(database, key_dir) as connection:
        for id_ in (1, 2):
            with pytest.raises(errors.CellAuthenticationError) as raised:
                connection.execute("SELECT ssn FROM p WHERE id = ?", [id_]).fetchall()
            assert str(raised.value) == errors.CellAuthenticationError.MESSAGE
        assert connection.execute("SELECT name FROM p WHERE id = 1").fetchall() == [("Ada",)]


def test_untrusted_key_path_is_refused(database: Path, key_dir: Path) -> None:
    with _open(database, key_dir, trusted_key_paths={"other.pem"}) as connection:
        with pytest.raises(errors.OperationalError, match="trusted_key_paths"):
            connection.execute("SELECT ssn FROM p").fetchall()
        assert connection.execute("SELECT name FROM p WHERE id = 1").fetchall() == [("Ada",)]


def test_a_different_key_under_the_cmk_file_name_says_so(database: Path, tmp_path: Path) -> None:
    # The common mistake: key_dir holds another key named cmk.pem. The error is the envelope's
    # (a CellAuthenticationError), says to bring the right CMK, and plaintext columns still read.
    other = make_pem_keys(tmp_path / "other-keys", "cmk.pem")
    with _open(database, other) as connection:
        with pytest.raises(errors.CellAuthenticationError) as raised:
            connection.execute("SELECT ssn FROM p").fetchall()
        assert str(raised.value) == EnvelopeAuthenticationError.MESSAGE
        assert "123-45-6789" not in str(raised.value)
        assert connection.execute("SELECT name FROM p WHERE id = 1").fetchall() == [("Ada",)]


def test_cek_cache_ttl_zero_still_works(database: Path, key_dir: Path) -> None:
    with _open(database, key_dir, cek_cache_ttl=0) as connection:
        assert connection.execute("SELECT ssn FROM p WHERE id = 2").fetchall() == [("987-65-4321",)]


def test_encrypted_ddl_in_a_rolled_back_transaction(con: engine.Connection) -> None:
    con.execute("BEGIN")
    con.execute(f"CREATE TABLE q (v INT {ENC.format('cek1', 'RANDOMIZED')})")
    con.execute("INSERT INTO q VALUES (5)")
    assert con.execute("SELECT v FROM q").fetchall() == [(5,)]
    con.rollback()
    registered = con.execute(
        "SELECT count(*) FROM sys.encrypted_columns WHERE table_name = 'q'"
    ).fetchone()
    assert registered == (0,)
    con.execute(f"CREATE TABLE q (v VARCHAR {ENC.format('cek2', 'DETERMINISTIC')})")
    con.execute("INSERT INTO q VALUES ('again')")
    assert con.execute("SELECT v FROM q WHERE v = 'again'").fetchall() == [("again",)]


def test_dropping_a_key_in_use_is_refused(con: engine.Connection) -> None:
    with pytest.raises(errors.ProgrammingError, match="still used"):
        con.execute("DROP COLUMN ENCRYPTION KEY cek1")
    con.execute("ALTER TABLE p DROP COLUMN other_ssn")
    con.execute("DROP COLUMN ENCRYPTION KEY cek2")
    names = con.execute("SELECT name FROM sys.column_encryption_keys ORDER BY name").fetchall()
    assert names == [("cek1",)]


def test_a_second_connection_sees_catalog_changes_of_the_first(
    database: Path, key_dir: Path
) -> None:
    """Two connections to one file in one process share DuckDB's database. A table that one
    creates must be encrypted for the other at once, or the other would write plaintext."""
    first, second = _open(database, key_dir), _open(database, key_dir)
    try:
        assert second.execute("SELECT count(*) FROM p").fetchone() == (2,)
        first.execute(f"CREATE TABLE fresh (v VARCHAR {ENC.format('cek1', 'DETERMINISTIC')})")
        second.execute("INSERT INTO fresh VALUES ('written by the second')")
        assert first.execute("SELECT v FROM fresh").fetchall() == [("written by the second",)]
    finally:
        first.close()
        second.close()
    raw = duckdb.connect(str(database))
    (cell,) = raw.execute("SELECT v FROM fresh").fetchone()
    raw.close()
    assert isinstance(cell, bytes) and b"written by the second" not in cell


def test_explain_says_what_is_encrypted_and_never_shows_literals(con: engine.Connection) -> None:
    text = con.explain("SELECT ssn FROM p WHERE ssn = '123-45-6789' AND id = ?")
    assert "runs in DuckDB, on ciphertext for the encrypted columns of p" in text
    assert "encrypted by the client for p.ssn (DETERMINISTIC, key cek1)" in text
    assert "your parameter 1, sent as plaintext" in text
    assert "column ssn: decrypted by the client" in text
    assert "123-45-6789" not in text


def test_a_second_connection_sees_the_change_only_once_committed(
    database: Path, key_dir: Path
) -> None:
    first, second = _open(database, key_dir), _open(database, key_dir)
    try:
        first.execute("BEGIN")
        first.execute(f"CREATE TABLE later (v VARCHAR {ENC.format('cek1', 'RANDOMIZED')})")
        with pytest.raises(errors.ProgrammingError):
            second.execute("SELECT * FROM later")
        first.commit()
        second.execute("INSERT INTO later VALUES ('after the commit')")
        assert first.execute("SELECT v FROM later").fetchall() == [("after the commit",)]
    finally:
        first.close()
        second.close()
    raw = duckdb.connect(str(database))
    (cell,) = raw.execute("SELECT v FROM later").fetchone()
    raw.close()
    assert b"after the commit" not in cell


def test_sys_tables_stay_plaintext_even_when_a_user_table_shares_the_name(
    con: engine.Connection,
) -> None:
    con.execute(f"CREATE TABLE column_master_keys (x VARCHAR {ENC.format('cek1', 'RANDOMIZED')})")
    con.execute("INSERT INTO column_master_keys VALUES ('mine')")
    assert con.execute("SELECT name FROM sys.column_master_keys").fetchall() == [("cmk1",)]
    assert con.execute("SELECT x FROM column_master_keys").fetchall() == [("mine",)]

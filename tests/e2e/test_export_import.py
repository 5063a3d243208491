"""EXPORT DATABASE / IMPORT DATABASE on a database with encrypted columns: the export holds the
ciphertext and the sys.* catalog exactly as stored, and the import gives a database the client
reads again; an import that would overwrite a catalog in use is refused and changes nothing."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import engine
from engine.errors import ProgrammingError
from tests.support.keys import CEK1_KEYS

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = [(1, "123-45-6789", "first note"), (2, "987-65-4321", None), (3, "555-00-1111", "third")]
SYS_TABLES = (
    "column_master_keys",
    "column_encryption_keys",
    "column_encryption_key_values",
    "encrypted_columns",
)


def _open(path: Path, key_dir: Path, **options: object) -> engine.Connection:
    return engine.connect(str(path), key_dir=str(key_dir), **options)


def _with_keys(con: engine.Connection) -> None:
    for statement in CEK1_KEYS:
        con.execute(statement)


def _export(source: Path, key_dir: Path, exported: Path, options: str = "") -> Path:
    """EXPORT DATABASE of ``source`` into the folder ``exported`` (key_dir: tests/e2e/conftest)."""
    with _open(source, key_dir) as con:
        con.execute(f"EXPORT DATABASE '{exported}'{options}")
    return exported


@pytest.fixture()
def source(tmp_path: Path, key_dir: Path) -> Path:
    path = tmp_path / "source.duckdb"
    with _open(path, key_dir) as con:
        _with_keys(con)
        con.execute(
            f"CREATE TABLE p (id INT, ssn CHAR(11) {ENC.format('DETERMINISTIC')}, "
            f"note VARCHAR {ENC.format('RANDOMIZED')}, city VARCHAR)"
        )
        con.cursor().executemany(
            "INSERT INTO p VALUES (?, ?, ?, ?)", [(*row, "Oslo") for row in ROWS]
        )
    return path


def _stored(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows as DuckDB stores them (ciphertext as bytes), read without the engine."""
    with duckdb.connect(str(path), read_only=True) as raw:
        tables = {"p": raw.execute("SELECT * FROM p ORDER BY id").fetchall()}
        for table in SYS_TABLES:
            tables[table] = sorted(raw.execute(f"SELECT * FROM sys.{table}").fetchall(), key=repr)
    return tables


def test_export_then_import_round_trips_ciphertext_catalog_and_queries(
    source: Path, tmp_path: Path, key_dir: Path
) -> None:
    exported = _export(source, key_dir, tmp_path / "exported")
    assert (exported / "schema.sql").exists()
    # The export is host-only: the data file holds the stored ciphertext, no plaintext.
    dump = b"".join(f.read_bytes() for f in exported.iterdir())
    assert not any(ssn.encode() in dump for _, ssn, _ in ROWS)
    assert b"first note" not in dump

    target = tmp_path / "target.duckdb"
    with _open(target, key_dir) as con:  # a new file: the engine creates an empty catalog
        con.execute(f"IMPORT DATABASE '{exported}'")
        # The same connection reads the imported catalog at once.
        assert con.execute("SELECT id, ssn, note FROM p ORDER BY id").fetchall() == ROWS
        found = con.execute("SELECT id FROM p WHERE ssn = ?", ["987-65-4321"]).fetchall()
        assert found == [(2,)]
    assert _stored(target) == _stored(source)

    with _open(target, key_dir) as con:  # and so does a new connection
        cursor = con.execute("SELECT note, ssn FROM p WHERE ssn = '555-00-1111'")
        assert cursor.fetchall() == [("third", "555-00-1111")]
        assert [d[1] for d in cursor.description] == ["VARCHAR", "VARCHAR(11)"]
        con.execute("INSERT INTO p VALUES (4, '000-00-0004', 'new', 'Rome')")
        assert con.execute("SELECT note FROM p WHERE ssn = ?", ["000-00-0004"]).fetchall() == [
            ("new",)
        ]


def test_export_in_parquet_round_trips(source: Path, tmp_path: Path, key_dir: Path) -> None:
    exported = _export(source, key_dir, tmp_path / "parquet", " (FORMAT parquet)")
    target = tmp_path / "target.duckdb"
    with _open(target, key_dir) as con:
        con.execute(f"IMPORT DATABASE '{exported}'")
        assert con.execute("SELECT id, ssn, note FROM p ORDER BY id").fetchall() == ROWS
    assert _stored(target) == _stored(source)


def test_import_over_a_catalog_in_use_is_refused_and_changes_nothing(
    source: Path, tmp_path: Path, key_dir: Path
) -> None:
    exported = _export(source, key_dir, tmp_path / "exported")
    busy = tmp_path / "busy.duckdb"
    with _open(busy, key_dir) as con:
        _with_keys(con)
        con.execute("CREATE TABLE other (i INT)")
        with pytest.raises(ProgrammingError, match="import into a new database file"):
            con.execute(f"IMPORT DATABASE '{exported}'")
        # Still this database's own catalog, and the connection still works.
        assert con.execute("SELECT name FROM sys.column_master_keys").fetchall() == [("cmk1",)]
        assert con.execute("SELECT count(*) FROM other").fetchall() == [(0,)]
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'p'"
        )
        assert tables.fetchall() == []


def test_failed_import_rolls_back_the_catalog_swap(
    source: Path, tmp_path: Path, key_dir: Path
) -> None:
    exported = _export(source, key_dir, tmp_path / "exported")
    target = tmp_path / "clash.duckdb"
    with _open(target, key_dir) as con:
        con.execute("CREATE TABLE p (i INT)")  # the import's CREATE TABLE p fails
        with pytest.raises(engine.DatabaseError):
            con.execute(f"IMPORT DATABASE '{exported}'")
        # The empty catalog is still there: key DDL and encrypted tables work.
        _with_keys(con)
        con.execute(f"CREATE TABLE q (s VARCHAR {ENC.format('RANDOMIZED')})")
        con.execute("INSERT INTO q VALUES ('x')")
        assert con.execute("SELECT s FROM q").fetchall() == [("x",)]


def test_import_of_a_plain_duckdb_export_keeps_the_catalog(tmp_path: Path, key_dir: Path) -> None:
    exported = tmp_path / "plain"
    with duckdb.connect(str(tmp_path / "plain.duckdb")) as raw:
        raw.execute("CREATE TABLE t (i INT, b BLOB); INSERT INTO t VALUES (1, X'00ff')")
        raw.execute(f"EXPORT DATABASE '{exported}'")
    with _open(tmp_path / "target.duckdb", key_dir) as con:
        _with_keys(con)
        con.execute(f"IMPORT DATABASE '{exported}'")
        assert con.execute("SELECT i, b FROM t").fetchall() == [(1, b"\x00\xff")]
        assert con.execute("SELECT name FROM sys.column_master_keys").fetchall() == [("cmk1",)]

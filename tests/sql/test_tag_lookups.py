"""Deterministic lookups through the hidden tag columns, differential against plaintext DuckDB:
after each write path (INSERT with literals, parameters and omitted columns, executemany,
bulk_insert, INSERT … SELECT, UPDATE, in-place re-encryption and decryption, DROP COLUMN,
EXPORT/IMPORT) every stored tag equals the tag of its cell, and lookups by =, IN and equi-join
return what plaintext DuckDB returns. Also: the tag column stays invisible, and a table made
before tags existed keeps working on the plain path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import errors
from engine.repl.introspection import read_catalog
from engine.rotation import PlaintextColumnWarning
from engine.sql.tag_columns import cell_tag
from tests.support.keys import CEK1_CEK2_KEYS, make_pem_keys

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
COLUMNS = "id INTEGER, ssn VARCHAR{}, n INTEGER"
VALUES = ["a", "b", "c", "Zoë", "", None]
LOOKUPS = [
    ("SELECT id FROM t WHERE ssn = ? ORDER BY id", ["b"]),
    ("SELECT id FROM t WHERE ssn = 'Zoë' ORDER BY id", []),
    ("SELECT id, n FROM t WHERE ssn IN ('a', ?) ORDER BY id", ["c"]),
    ("SELECT id FROM t WHERE ssn = ? OR n > 25 ORDER BY id", [""]),
    ("SELECT id FROM t WHERE NOT (ssn = 'a') ORDER BY id", []),
    ("SELECT count(*) FROM t WHERE ssn = ?", ["nobody"]),
    ("SELECT t.id, u.id FROM t JOIN u ON t.ssn = u.ssn ORDER BY 1, 2", []),
    ("SELECT n, count(*) FROM t WHERE ssn = ? GROUP BY n ORDER BY n", ["a"]),
    ("SELECT ssn, count(*) FROM t GROUP BY ssn HAVING ssn = 'a'", []),
]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pem_keys(tmp_path_factory.mktemp("tag-keys"), "cmk.pem")


def _open(path: Path | str, key_dir: Path) -> engine.Connection:
    return engine.connect(str(path), key_dir=str(key_dir))


def _create(con: engine.Connection) -> None:
    for statement in CEK1_CEK2_KEYS:
        con.execute(statement)
    for table in ("t", "u"):
        con.execute(
            f"CREATE TABLE {table} ({COLUMNS.format(' ' + ENC.format('cek1', 'DETERMINISTIC'))})"
        )


@pytest.fixture()
def pair(
    tmp_path: Path, key_dir: Path
) -> Iterator[tuple[engine.Connection, duckdb.DuckDBPyConnection]]:
    con = _open(tmp_path / "enc.duckdb", key_dir)
    _create(con)
    plain = duckdb.connect()
    for table in ("t", "u"):
        plain.execute(f"CREATE TABLE {table} ({COLUMNS.format('')})")
    yield con, plain
    con.close()
    plain.close()


def _both(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
    sql: str,
    params: list[object] | None = None,
) -> None:
    con, plain = pair
    con.execute(sql, params)
    plain.execute(sql, params or [])


def _check(
    con: engine.Connection, plain: duckdb.DuckDBPyConnection, tables: tuple[str, ...] = ("t", "u")
) -> None:
    """Every stored tag is its cell's tag, and every lookup answers as plaintext DuckDB."""
    raw = con._host._con  # the host's DuckDB, to read what is stored
    for table in tables:
        rows = raw.execute(f'SELECT ssn, "__ae_tag_ssn" FROM {table}').fetchall()
        assert all(tag == cell_tag(cell) for cell, tag in rows)
    for sql, params in LOOKUPS:
        assert con.execute(sql, params).fetchall() == plain.execute(sql, params).fetchall(), sql


def test_lookups_use_the_tag(pair: tuple[engine.Connection, duckdb.DuckDBPyConnection]) -> None:
    con, _ = pair
    text = con.explain("SELECT id FROM t WHERE ssn = ?")
    assert '"__ae_tag_ssn" = ?' in text and "sent as the cell's tag" in text


def test_insert_paths(pair: tuple[engine.Connection, duckdb.DuckDBPyConnection]) -> None:
    con, plain = pair
    _both(pair, "INSERT INTO t VALUES (1, 'a', 10), (2, ?, 20)", ["b"])
    _both(pair, "INSERT INTO t (n, id) VALUES (30, 3)")  # ssn omitted: NULL, tag 0
    _both(pair, "INSERT INTO t (ssn, id, n) VALUES (?, ?, ?)", ["", 4, 40])
    rows = [(5, "c", 50), (6, "Zoë", 60), (7, None, 70)]
    con.cursor().executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    plain.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    bulk = [(8, "a", 80), (9, None, 90), (10, "b", 100)]
    con.bulk_insert("t", bulk)
    plain.executemany("INSERT INTO t VALUES (?, ?, ?)", bulk)
    import pyarrow as pa

    arrow = pa.table({"id": [11, 12], "ssn": ["c", "a"]})  # n left out
    con.bulk_insert("t", arrow)
    plain.execute("INSERT INTO t (id, ssn) VALUES (11, 'c'), (12, 'a')")
    _both(pair, "INSERT INTO u SELECT id + 100, ssn, n FROM t WHERE id < 6")
    _both(pair, "INSERT INTO u (ssn, id) SELECT ssn, id + 200 FROM t WHERE ssn = 'a'")
    _check(con, plain)


def test_update_and_delete_paths(pair: tuple[engine.Connection, duckdb.DuckDBPyConnection]) -> None:
    con, plain = pair
    _both(pair, "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30), (4, NULL, 40)")
    _both(pair, "INSERT INTO u VALUES (1, 'c', 1), (2, 'a', 2)")
    _both(pair, "UPDATE t SET ssn = ? WHERE id = ?", ["c", 1])
    _both(pair, "UPDATE t SET ssn = NULL WHERE ssn = 'b'")
    _both(pair, "UPDATE t SET ssn = 'Zoë' WHERE id = 4")
    _both(pair, "UPDATE u SET ssn = (SELECT t.ssn FROM t WHERE t.id = 3) WHERE id = 2")
    con.cursor().executemany("UPDATE t SET ssn = ? WHERE id = ?", [("a", 3), ("b", 2)])
    plain.executemany("UPDATE t SET ssn = ? WHERE id = ?", [("a", 3), ("b", 2)])
    _both(pair, "DELETE FROM t WHERE ssn = ?", ["Zoë"])
    _check(con, plain)


def test_in_place_encryption_changes(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
) -> None:
    con, plain = pair
    _both(pair, "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, NULL, 30), (4, 'a', 40)")
    _both(pair, "INSERT INTO u VALUES (1, 'a', 1)")
    # A CEK rotation keeps the tag column, recomputed from the new cells.
    con.execute(f"ALTER TABLE t ALTER COLUMN ssn VARCHAR {ENC.format('cek2', 'DETERMINISTIC')}")
    assert con.execute("SELECT id FROM t WHERE ssn = 'a' ORDER BY id").fetchall() == [(1,), (4,)]
    raw = con._host._con
    assert all(
        tag == cell_tag(c) for c, tag in raw.execute('SELECT ssn, "__ae_tag_ssn" FROM t').fetchall()
    )
    # Back under cek1, so the join with u is allowed again.
    con.execute(f"ALTER TABLE t ALTER COLUMN ssn VARCHAR {ENC.format('cek1', 'DETERMINISTIC')}")
    _check(con, plain)
    # RANDOMIZED has no use for a tag: the column goes with its catalog row.
    con.execute(f"ALTER TABLE u ALTER COLUMN ssn VARCHAR {ENC.format('cek1', 'RANDOMIZED')}")
    names = [
        r[0]
        for r in raw.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'u'"
        ).fetchall()
    ]
    assert names == ["id", "ssn", "n"]
    assert con.execute("SELECT table_name FROM sys.tag_columns").fetchall() == [("t",)]
    # Decryption in place drops it too.
    with pytest.warns(PlaintextColumnWarning):
        con.alter_column_encryption("ALTER TABLE t ALTER COLUMN ssn VARCHAR", allow_decryption=True)
    assert con.execute("SELECT count(*) FROM sys.tag_columns").fetchall() == [(0,)]
    assert con.execute("SELECT id FROM t WHERE ssn = 'a' ORDER BY id").fetchall() == [(1,), (4,)]


def test_drop_column_drops_its_tag(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
) -> None:
    con, _ = pair
    con.execute("INSERT INTO t VALUES (1, 'a', 10)")
    con.execute("ALTER TABLE t DROP COLUMN ssn")
    raw = con._host._con
    names = [
        r[0]
        for r in raw.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 't'"
        ).fetchall()
    ]
    assert names == ["id", "n"]
    assert con.execute("SELECT * FROM t").fetchall() == [(1, 10)]
    con.execute(f"ALTER TABLE t ADD COLUMN ssn VARCHAR {ENC.format('cek1', 'DETERMINISTIC')}")
    con.execute("UPDATE t SET ssn = 'q'")
    # A column added later has no tag column: the plain path, same answers.
    assert "__ae_tag" not in con.explain("SELECT id FROM t WHERE ssn = ?")
    assert con.execute("SELECT id FROM t WHERE ssn = 'q'").fetchall() == [(1,)]


def test_the_tag_column_is_invisible(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
) -> None:
    con, _ = pair
    con.execute("INSERT INTO t VALUES (1, 'a', 10)")
    cursor = con.execute("SELECT * FROM t")
    assert cursor.fetchall() == [(1, "a", 10)]
    assert [d[0] for d in cursor.description] == ["id", "ssn", "n"]
    assert [r[0] for r in con.execute("DESCRIBE t").fetchall()] == ["id", "ssn", "n"]
    catalog = read_catalog(con)  # what the REPL's \d shows
    assert [c.name for c in next(t for t in catalog.tables if t.name == "t").columns] == [
        "id",
        "ssn",
        "n",
    ]
    assert [c.name for c in con._current_snapshot().table("t").columns] == ["id", "ssn", "n"]


def test_export_and_import_keep_the_tags(tmp_path: Path, key_dir: Path) -> None:
    source = _open(tmp_path / "a.duckdb", key_dir)
    _create(source)
    source.execute("INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, NULL, 30)")
    source.execute(f"EXPORT DATABASE '{tmp_path / 'export'}'")
    source.close()
    target = _open(tmp_path / "b.duckdb", key_dir)
    target.execute(f"IMPORT DATABASE '{tmp_path / 'export'}'")
    assert "__ae_tag_ssn" in target.explain("SELECT id FROM t WHERE ssn = ?")
    assert target.execute("SELECT id FROM t WHERE ssn = ?", ["b"]).fetchall() == [(2,)]
    assert target.execute("SELECT * FROM t ORDER BY id").fetchall() == [
        (1, "a", 10),
        (2, "b", 20),
        (3, None, 30),
    ]
    target.execute("INSERT INTO t VALUES (4, 'b', 40)")
    assert target.execute("SELECT id FROM t WHERE ssn = 'b' ORDER BY id").fetchall() == [(2,), (4,)]
    target.close()


def test_a_table_made_before_tags_keeps_the_plain_path(tmp_path: Path, key_dir: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = _open(path, key_dir)
    _create(con)
    con.execute("INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)")
    con.close()
    # What a database written before tags looks like: no tag column, no sys.tag_columns.
    raw = duckdb.connect(str(path))
    raw.execute('ALTER TABLE t DROP COLUMN "__ae_tag_ssn"')
    raw.execute("DROP TABLE sys.tag_columns")
    raw.close()
    con = _open(path, key_dir)
    assert "__ae_tag" not in con.explain("SELECT id FROM t WHERE ssn = ?")
    con.execute("INSERT INTO t VALUES (3, 'b', 30)")
    con.bulk_insert("t", [(4, "a", 40)])
    assert con.execute("SELECT id FROM t WHERE ssn = 'b' ORDER BY id").fetchall() == [(2,), (3,)]
    assert con.execute("SELECT id FROM t WHERE ssn IN ('a') ORDER BY id").fetchall() == [(1,), (4,)]
    con.close()


def test_a_write_that_forgets_the_tag_fails_in_duckdb(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
) -> None:
    con, _ = pair
    raw = con._host._con
    with pytest.raises(duckdb.ConstraintException):
        raw.execute("INSERT INTO t (id, ssn) VALUES (1, '\\x01'::BLOB)")
    with pytest.raises(errors.NotSupportedError, match="hidden tag column"):
        con.execute("INSERT INTO t DEFAULT VALUES")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(VALUES)), max_size=12),
    probes=st.lists(st.sampled_from(VALUES[:-1] + ["zz"]), min_size=1, max_size=3),
)
def test_random_lookups_match_plaintext(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
    rows: list[tuple[int, str | None]],
    probes: list[str],
) -> None:
    con, plain = pair
    for target in (con, plain):
        target.execute("DELETE FROM t")
    if rows:
        con.cursor().executemany("INSERT INTO t (id, ssn) VALUES (?, ?)", rows)
        plain.executemany("INSERT INTO t (id, ssn) VALUES (?, ?)", rows)
    marks = ", ".join("?" for _ in probes)
    for sql, params in [
        ("SELECT id, ssn FROM t WHERE ssn = ?", probes[:1]),
        (f"SELECT id FROM t WHERE ssn IN ({marks})", probes),
        ("SELECT count(*) FROM t WHERE ssn = ? AND id > 10", probes[-1:]),
    ]:
        ours = sorted(con.execute(sql, params).fetchall(), key=repr)
        assert ours == sorted(plain.execute(sql, params).fetchall(), key=repr)


def test_indexed_columns_are_looked_up_through_their_index(
    pair: tuple[engine.Connection, duckdb.DuckDBPyConnection],
) -> None:
    """DuckDB uses an index only for a lone filter on its column, so a UNIQUE, PRIMARY KEY or
    CREATE INDEX column is looked up without its tag; its writes still keep the tag exact."""
    con, _ = pair
    con.execute(
        f"CREATE TABLE k (id INTEGER, ssn VARCHAR {ENC.format('cek1', 'DETERMINISTIC')} UNIQUE)"
    )
    con.execute("INSERT INTO k VALUES (1, 'a'), (2, 'b')")
    assert "__ae_tag" not in con.explain("SELECT id FROM k WHERE ssn = ?")
    assert con.execute("SELECT id FROM k WHERE ssn = 'b'").fetchall() == [(2,)]
    raw = con._host._con
    assert all(
        tag == cell_tag(c) for c, tag in raw.execute('SELECT ssn, "__ae_tag_ssn" FROM k').fetchall()
    )
    assert "__ae_tag" in con.explain("SELECT id FROM t WHERE ssn = ?")
    con.execute("CREATE INDEX t_ssn ON t (ssn)")
    assert "__ae_tag" not in con.explain("SELECT id FROM t WHERE ssn = ?")

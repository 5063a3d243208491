"""engine.Encrypted: a value the caller marks must leave the client encrypted, or not at all.

The catalog is the host's, so a hostile host can say that a column is plaintext; without the
marker the client then sends that column's values as they are (a known limit, shown here too).
With it, the statement is refused before anything reaches the host, whichever path the value
takes: an insert, an enclave comparand, executemany.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import engine
from engine.errors import ProgrammingError
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection
from tests.support.enclave_e2e import quiet_fetchall as _quiet

CANARY = "CANARY-FORCED-5521"
DETERMINISTIC = RANDOMIZED.replace("RANDOMIZED", "DETERMINISTIC")


def _make(directory: Path) -> Path:
    """A file with t(id INTEGER, note VARCHAR randomized, code VARCHAR deterministic, plain
    VARCHAR) and one row, closed."""
    with enclave_connection(directory) as con:
        con.execute(
            f"CREATE TABLE t (id INTEGER, note VARCHAR {RANDOMIZED}, "
            f"code VARCHAR {DETERMINISTIC}, plain VARCHAR)"
        )
        con.execute("INSERT INTO t VALUES (1, 'n1', 'c1', 'p1')")
    return directory / "db.duckdb"


def _connect(directory: Path, monkeypatch: pytest.MonkeyPatch) -> engine.Connection:
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(directory / "platform"))
    return engine.connect(
        str(directory / "db.duckdb"), key_dir=str(directory), attestation_protocol="none"
    )


def _strip_note_encryption(database: Path) -> None:
    """What a hostile host does: the catalog stops listing t.note as encrypted, and the column
    takes text, so that a plaintext insert succeeds."""
    with duckdb.connect(str(database)) as raw:
        raw.execute(
            "DELETE FROM sys.encrypted_columns WHERE table_name = 't' AND column_name = 'note'"
        )
        raw.execute("ALTER TABLE t ALTER COLUMN note TYPE VARCHAR USING NULL")
        raw.execute("UPDATE sys.catalog_version SET version = version + 1")


def _file_holds(database: Path, text: str) -> bool:
    with duckdb.connect(str(database)) as raw:
        raw.execute("CHECKPOINT")
    wal = database.with_suffix(".duckdb.wal")
    blobs = [database.read_bytes()] + ([wal.read_bytes()] if wal.exists() else [])
    return any(text.encode() in blob for blob in blobs)


def test_marked_values_are_encrypted_as_usual(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make(tmp_path)
    with _connect(tmp_path, monkeypatch) as con:
        con.execute(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [2, engine.Encrypted("n2"), engine.Encrypted("c2"), "p2"],
        )
        con.cursor().executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [(3, engine.Encrypted("n3"), "c3", "p3"), (4, "n4", engine.Encrypted("c4"), "p4")],
        )
        # A deterministic lookup and an enclave comparand take the marker too.
        assert con.execute(
            "SELECT id FROM t WHERE code = ?", [engine.Encrypted("c2")]
        ).fetchall() == [(2,)]
        rows = _quiet(con, "SELECT id FROM t WHERE note >= ? ORDER BY id", [engine.Encrypted("n3")])
        assert rows == [(3,), (4,)]
        assert con.execute("SELECT note, code FROM t WHERE id = 4").fetchall() == [("n4", "c4")]


@pytest.mark.parametrize(
    ("sql", "parameters"),
    [
        ("INSERT INTO t VALUES (?, ?, ?, ?)", [5, "n5", "c5", engine.Encrypted(CANARY)]),
        ("SELECT id FROM t WHERE plain = ?", [engine.Encrypted(CANARY)]),
        ("SELECT id FROM t WHERE id = ?", [engine.Encrypted(1)]),
        ("SELECT ? AS x", [engine.Encrypted(CANARY)]),
        ("SELECT id FROM t ORDER BY note LIMIT ?", [engine.Encrypted(1)]),
    ],
)
def test_a_marked_value_for_a_plaintext_use_is_refused_and_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sql: str, parameters: list[object]
) -> None:
    database = _make(tmp_path)
    with _connect(tmp_path, monkeypatch) as con:
        with pytest.raises(ProgrammingError, match="marked engine.Encrypted") as caught:
            _quiet(con, sql, parameters)
        assert CANARY not in str(caught.value)
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    assert not _file_holds(database, CANARY)


def test_executemany_refuses_a_marked_value_in_any_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = _make(tmp_path)
    with _connect(tmp_path, monkeypatch) as con:
        with pytest.raises(ProgrammingError, match="parameter 4 is marked"):
            con.cursor().executemany(
                "INSERT INTO t VALUES (?, ?, ?, ?)",
                [(5, "n5", "c5", "p5"), (6, "n6", "c6", engine.Encrypted(CANARY))],
            )
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    assert not _file_holds(database, CANARY)


def _insert_after_stripping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, note: object
) -> tuple[ProgrammingError | None, bool]:
    """Insert ``note`` into t.note after the host stripped its encryption: the refusal, if
    any, and whether the canary then reached the file."""
    database = _make(tmp_path)
    _strip_note_encryption(database)
    refusal = None
    with _connect(tmp_path, monkeypatch) as con:
        try:
            con.execute("INSERT INTO t VALUES (?, ?, ?, ?)", [7, note, "c7", "p7"])
        except ProgrammingError as error:
            refusal = error
    return refusal, _file_holds(database, CANARY)


def test_a_host_that_strips_a_columns_encryption_gets_no_marked_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal, leaked = _insert_after_stripping(tmp_path, monkeypatch, engine.Encrypted(CANARY))
    assert refusal is not None and "host may have altered the catalog" in str(refusal)
    assert CANARY not in str(refusal) and not leaked


def test_known_limit_an_unmarked_value_goes_where_the_hosts_catalog_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/SECURITY.md, "Known limits": the client encrypts what the host's catalog says is
    # encrypted. A host that strips a column's encryption gets that column's unmarked values.
    refusal, leaked = _insert_after_stripping(tmp_path, monkeypatch, CANARY)
    assert refusal is None and leaked


def test_the_marker_never_shows_its_value() -> None:
    marked = engine.Encrypted(CANARY)
    assert CANARY not in repr(marked) and CANARY not in str(marked) and CANARY not in f"{marked}"
    assert engine.Encrypted(marked) == marked  # wrapping twice is wrapping once


def test_a_marker_needs_column_encryption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make(tmp_path)
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
    with engine.connect(str(tmp_path / "db.duckdb"), column_encryption=False) as con:
        with pytest.raises(ProgrammingError, match="column_encryption=True"):
            con.execute("SELECT id FROM t WHERE code = ?", [engine.Encrypted("c1")])


def test_module_doctests() -> None:
    import doctest

    import engine.client.forced_encryption

    result = doctest.testmod(engine.client.forced_encryption, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

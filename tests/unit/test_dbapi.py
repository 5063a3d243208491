"""PEP 249 conformance of engine.connect on plaintext tables: module globals, type objects and
constructors, description, rowcount, fetchmany/arraysize, iteration, closed objects, the context
manager, transactions, executemany atomicity and the mapping of DuckDB errors."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

import engine
from engine import errors


@pytest.fixture()
def con() -> engine.Connection:
    connection = engine.connect(":memory:")
    yield connection
    connection.close()


def test_module_globals() -> None:
    assert engine.apilevel == "2.0"
    assert engine.threadsafety == 1
    assert engine.paramstyle == "qmark"


def test_exceptions_are_connection_attributes(con: engine.Connection) -> None:
    for name in (
        "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
        "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    ):  # fmt: skip
        assert getattr(con, name) is getattr(errors, name)
        assert getattr(engine, name) is getattr(errors, name)


def test_constructors() -> None:
    assert engine.Date(2024, 1, 31) == datetime.date(2024, 1, 31)
    assert engine.Time(10, 11, 12) == datetime.time(10, 11, 12)
    assert engine.Timestamp(2024, 1, 31, 10, 11, 12) == datetime.datetime(2024, 1, 31, 10, 11, 12)
    assert engine.Binary(b"\x00\x01") == b"\x00\x01"
    ticks = time.mktime((2024, 1, 31, 10, 11, 12, 0, 0, -1))
    assert engine.DateFromTicks(ticks) == datetime.date(2024, 1, 31)
    assert engine.TimeFromTicks(ticks) == datetime.time(10, 11, 12)
    assert engine.TimestampFromTicks(ticks) == datetime.datetime(2024, 1, 31, 10, 11, 12)


def test_type_objects_match_description_type_codes(con: engine.Connection) -> None:
    cursor = con.execute(
        "SELECT 1 AS n, 2.5::DECIMAL(4,1) AS d, 'a' AS s, '\\x00'::BLOB AS b, "
        "DATE '2024-01-01' AS day, TIMESTAMP '2024-01-01 00:00:00' AS ts, rowid AS r "
        "FROM (SELECT 1) AS one(rowid)"
    )
    codes = [column[1] for column in cursor.description]
    assert codes[0] == engine.NUMBER and codes[1] == engine.NUMBER
    assert codes[2] == engine.STRING and codes[2] != engine.NUMBER
    assert codes[3] == engine.BINARY
    assert codes[4] == engine.DATETIME and codes[5] == engine.DATETIME
    assert engine.ROWID != "INTEGER"


def test_description_is_seven_tuples_and_none_without_rows(con: engine.Connection) -> None:
    cursor = con.cursor()
    assert cursor.description is None
    cursor.execute("SELECT 1 AS a, 'x' AS b")
    assert [len(column) for column in cursor.description] == [7, 7]
    assert [column[0] for column in cursor.description] == ["a", "b"]
    cursor.execute("CREATE TABLE t (a INT)")
    assert cursor.description is None


def test_rowcount(con: engine.Connection) -> None:
    cursor = con.cursor()
    assert cursor.rowcount == -1
    cursor.execute("CREATE TABLE t (a INT)")
    cursor.execute("INSERT INTO t VALUES (1), (2), (3)")
    assert cursor.rowcount == 3
    cursor.execute("UPDATE t SET a = a + 1 WHERE a >= 2")
    assert cursor.rowcount == 2
    cursor.execute("DELETE FROM t WHERE a = 1")
    assert cursor.rowcount == 1
    cursor.execute("SELECT * FROM t")
    assert cursor.rowcount == -1
    cursor.executemany("INSERT INTO t VALUES (?)", [(7,), (8,)])
    assert cursor.rowcount == 2


def test_fetchone_fetchmany_fetchall_and_arraysize(con: engine.Connection) -> None:
    cursor = con.execute("SELECT * FROM range(5) AS r(i) ORDER BY i")
    assert cursor.arraysize == 1
    assert cursor.fetchone() == (0,)
    assert cursor.fetchmany() == [(1,)]
    cursor.arraysize = 2
    assert cursor.fetchmany() == [(2,), (3,)]
    assert cursor.fetchmany(10) == [(4,)]
    assert cursor.fetchmany() == []
    assert cursor.fetchone() is None
    assert cursor.fetchall() == []
    assert con.execute("SELECT 1 WHERE false").fetchall() == []


def test_fetching_across_record_batches(con: engine.Connection) -> None:
    cursor = con.execute("SELECT i FROM range(5000) AS r(i) ORDER BY i")
    first = cursor.fetchmany(3000)
    rest = cursor.fetchall()
    assert [row[0] for row in first + rest] == list(range(5000))


def test_iteration(con: engine.Connection) -> None:
    cursor = con.execute("SELECT i FROM range(3) AS r(i) ORDER BY i")
    assert list(cursor) == [(0,), (1,), (2,)]
    assert iter(cursor) is cursor


def test_fetch_without_a_result_is_a_programming_error(con: engine.Connection) -> None:
    cursor = con.cursor()
    with pytest.raises(errors.ProgrammingError):
        cursor.fetchone()
    cursor.execute("CREATE TABLE t (a INT)")
    with pytest.raises(errors.ProgrammingError):
        cursor.fetchall()


def test_closed_cursor_and_connection_raise_interface_error() -> None:
    connection = engine.connect(":memory:")
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    cursor.close()
    cursor.close()  # closing twice is fine
    for call in (
        lambda: cursor.execute("SELECT 1"),
        cursor.fetchone,
        cursor.fetchall,
        lambda: cursor.executemany("SELECT ?", [(1,)]),
        lambda: cursor.setinputsizes([]),
    ):
        with pytest.raises(errors.InterfaceError):
            call()
    other = connection.cursor()
    connection.close()
    connection.close()
    for call in (
        connection.cursor,
        connection.commit,
        connection.rollback,
        lambda: other.execute("SELECT 1"),
        lambda: connection.bulk_insert("t", []),
    ):
        with pytest.raises(errors.InterfaceError):
            call()


def test_parameters(con: engine.Connection) -> None:
    assert con.execute("SELECT ? + ?, ?", [40, 2, "x"]).fetchone() == (42, "x")
    with pytest.raises(errors.ProgrammingError, match="2 parameter marker"):
        con.execute("SELECT ?, ?", [1])
    with pytest.raises(errors.ProgrammingError, match="qmark"):
        con.execute("SELECT ?", {"a": 1})
    with pytest.raises(errors.ProgrammingError, match="sequence"):
        con.execute("SELECT ?", "a")


def test_syntax_error_names_line_and_column(con: engine.Connection) -> None:
    with pytest.raises(errors.ProgrammingError, match=r"line 2, column"):
        con.execute("SELECT 1\nFROM WHERE")


def test_duckdb_errors_are_mapped(con: engine.Connection) -> None:
    con.execute("CREATE TABLE t (a INT PRIMARY KEY)")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(errors.IntegrityError):
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(errors.DataError):
        con.execute("INSERT INTO t VALUES (?)", ["not a number"])
    with pytest.raises(errors.ProgrammingError):
        con.execute("SELECT * FROM missing_table")


def test_multiple_statements_return_the_last_result(con: engine.Connection) -> None:
    cursor = con.execute("CREATE TABLE t (a INT); INSERT INTO t VALUES (5); SELECT a FROM t")
    assert cursor.fetchall() == [(5,)]
    with pytest.raises(errors.ProgrammingError, match="single statement"):
        con.execute("SELECT ?; SELECT ?", [1, 2])


def test_transactions_map_to_duckdb(con: engine.Connection) -> None:
    con.execute("CREATE TABLE t (a INT)")
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO t VALUES (1)")
    con.rollback()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.execute("BEGIN")
    con.execute("INSERT INTO t VALUES (2)")
    con.commit()
    con.rollback()  # nothing open: a no-op, as autocommit already committed
    assert con.execute("SELECT a FROM t").fetchall() == [(2,)]
    con.execute("INSERT INTO t VALUES (3)")  # autocommit
    con.rollback()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_rolled_back_ddl_leaves_the_catalog_as_before(con: engine.Connection) -> None:
    con.execute("BEGIN")
    con.execute("CREATE TABLE gone (a INT)")
    assert con.execute("SELECT count(*) FROM gone").fetchone() == (0,)
    con.rollback()
    with pytest.raises(errors.ProgrammingError):
        con.execute("SELECT * FROM gone")
    con.execute("CREATE TABLE gone (b VARCHAR)")
    assert [c[0] for c in con.execute("SELECT * FROM gone").description] == ["b"]


def test_context_manager_commits_or_rolls_back_then_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "ctx.duckdb")
    with engine.connect(path) as connection:
        connection.execute("CREATE TABLE t (a INT)")
        connection.execute("BEGIN")
        connection.execute("INSERT INTO t VALUES (1)")
    assert connection.closed
    with pytest.raises(RuntimeError), engine.connect(path) as connection:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("boom")
    with engine.connect(path) as connection:
        assert connection.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_executemany_is_atomic(con: engine.Connection) -> None:
    con.execute("CREATE TABLE t (a INT PRIMARY KEY, b VARCHAR)")
    con.execute("INSERT INTO t VALUES (0, 'zero')")
    with pytest.raises(errors.IntegrityError):
        con.cursor().executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (0, "dup"), (2, "b")])
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    # Mixed Python types in one column take the row-by-row path, still atomically.
    with pytest.raises(errors.DataError):
        con.cursor().executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), ("x", "b")])
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.cursor().executemany("UPDATE t SET b = ? WHERE a = ?", [("z", 0), ("q", 5)])
    assert con.execute("SELECT b FROM t").fetchall() == [("z",)]


def test_executemany_casts_text_like_duckdb(con: engine.Connection) -> None:
    con.execute("CREATE TABLE t (d DATE, n INT)")
    con.cursor().executemany("INSERT INTO t VALUES (?, ?)", [("2024-01-31", 1), (None, None)])
    assert con.execute("SELECT d, n FROM t ORDER BY n").fetchall() == [
        (datetime.date(2024, 1, 31), 1),
        (None, None),
    ]


def test_fetch_arrow_table_and_fetchdf(con: engine.Connection) -> None:
    table = con.execute("SELECT 1 AS a, 'x' AS b").fetch_arrow_table()
    assert table.to_pylist() == [{"a": 1, "b": "x"}]
    frame = con.execute("SELECT i FROM range(3) AS r(i) ORDER BY i").fetchdf()
    assert list(frame["i"]) == [0, 1, 2]


def test_values_as_duckdb_returns_them(con: engine.Connection) -> None:
    import duckdb

    sql = (
        "SELECT '5a3e0c3c-1111-4222-8333-444455556666'::UUID AS u, 1::HUGEINT AS h, "
        "map([1], ['a']) AS m, [1, 2] AS l, {'x': 1} AS s, "
        "TIMESTAMPTZ '2024-01-01 00:00:00+00' AS z, INTERVAL '-1 year 2 hours' AS i, "
        "INTERVAL 1 MONTH + INTERVAL 3 DAY + INTERVAL 5 MICROSECOND AS j, 'a'::ENUM('a') AS e"
    )
    assert con.execute(sql).fetchall() == duckdb.connect().execute(sql).fetchall()


def test_bulk_insert_plaintext(con: engine.Connection) -> None:
    import pyarrow as pa

    con.execute("CREATE TABLE t (a INT PRIMARY KEY, b VARCHAR)")
    assert con.bulk_insert("t", [(1, "x"), (2, None)]) == 2
    assert con.bulk_insert("t", pa.table({"B": ["y"], "A": [3]})) == 1
    assert con.bulk_insert("t", []) == 0
    with pytest.raises(errors.IntegrityError):
        con.bulk_insert("t", [(4, "ok"), (1, "duplicate")], batch_rows=1)
    with pytest.raises(errors.ProgrammingError, match="2 column"):
        con.bulk_insert("t", [(5,)])
    with pytest.raises(errors.ProgrammingError, match="unknown column"):
        con.bulk_insert("t", pa.table({"nope": [1]}))
    assert con.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [
        (1, "x"),
        (2, None),
        (3, "y"),
    ]


def test_connect_checks_its_options() -> None:
    with pytest.raises(errors.ProgrammingError, match="attestation_protocol"):
        engine.connect(":memory:", attestation_protocol="sgx")
    connection = engine.connect(":memory:", attestation_protocol="none")
    assert connection.attestation_protocol == "none"
    # The enclave is loaded; its session opens (and warns) on the first enclave statement.
    assert connection.enclave_available is True
    assert connection.attestation_summary() is None
    connection.close()
    connection = engine.connect(":memory:")
    assert connection.enclave_available is False
    connection.close()


def test_import_engine_does_not_load_duckdb() -> None:
    import subprocess
    import sys

    code = "import sys, engine; print('duckdb' in sys.modules, 'pyarrow' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.split() == ["False", "False"]


def test_bulk_insert_batches_with_types_that_differ_between_batches(
    con: engine.Connection,
) -> None:
    con.execute("CREATE TABLE t (a INT, b DOUBLE)")
    rows = [(None, None), (None, None), (1, 2), (3, 4.5)]
    assert con.bulk_insert("t", rows, batch_rows=2) == 4
    assert con.execute("SELECT a, b FROM t WHERE a IS NOT NULL ORDER BY a").fetchall() == [
        (1, 2.0),
        (3, 4.5),
    ]


@pytest.mark.parametrize("how", ["method", "sql"])
def test_errors_inside_an_aborted_transaction_are_pep_249_errors(
    con: engine.Connection, how: str
) -> None:
    con.execute("CREATE TABLE t (a INT PRIMARY KEY)")
    con.execute("BEGIN")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(errors.IntegrityError):
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(errors.DatabaseError, match="ROLLBACK"):
        con.execute("SELECT * FROM t")
    # Connection.rollback() or the SQL statement: the catalog version cannot be read inside an
    # aborted transaction, and ROLLBACK must not need it.
    if how == "method":
        con.rollback()
    else:
        con.execute("ROLLBACK")
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.execute("INSERT INTO t VALUES (2)")  # autocommit again
    assert con.execute("SELECT a FROM t").fetchall() == [(2,)]


def test_docs_list_exactly_the_connect_options() -> None:
    import inspect
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "dbapi.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    assert documented == set(inspect.signature(engine.connect).parameters)


def test_bulk_insert_progress_bar(
    con: engine.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    con.execute("CREATE TABLE t (a INT)")
    assert con.bulk_insert("t", [(i,) for i in range(10)], progress=True, batch_rows=3) == 10
    assert "insert t" in capsys.readouterr().err
    assert con.bulk_insert("t", [(1,)], progress=False) == 1
    assert capsys.readouterr().err == ""


def test_attached_databases_and_use_keep_the_catalog_reachable(con: engine.Connection) -> None:
    con.execute("ATTACH ':memory:' AS other")
    con.execute("CREATE TABLE other.x (a INT)")
    con.execute("USE other")
    con.execute("INSERT INTO x VALUES (7)")
    assert con.execute("SELECT a FROM x").fetchall() == [(7,)]
    assert con.execute("SELECT count(*) FROM memory.sys.column_master_keys").fetchone() == (0,)
    con.execute("USE memory")
    con.execute("DETACH other")
    assert con.execute("SELECT 1").fetchall() == [(1,)]

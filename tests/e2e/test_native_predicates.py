"""The native enclave predicates (enclave/enclavesql_udfs.duckdb_extension) against the Python
UDFs and plaintext DuckDB: the same answers on both paths, on DuckDB's worker threads, with
three-valued logic; a tampered cell is CellAuthenticationError on both; and with the extension
loaded the Python filter path is never called. CI builds the extension, so there it must load.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import engine
from enclave import duckdb_extension
from engine.errors import CellAuthenticationError, InternalError
from engine.host import enclave_execution
from engine.predicate_program import pack_predicates
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS, make_cmk

TABLE = (
    "CREATE TABLE t (id INTEGER, p INTEGER, a INTEGER {enc}, d DECIMAL(12,2) {enc}, "
    "s VARCHAR {enc}, day DATE {enc}, b INTEGER {enc})"
)
QUERIES = [
    "SELECT id FROM t WHERE a < 3 ORDER BY id",
    "SELECT id FROM t WHERE a BETWEEN -2 AND 4 AND d >= 10.5 ORDER BY id",
    "SELECT id FROM t WHERE s LIKE 'ab%' AND a <> 0 AND p > 2 ORDER BY id",
    "SELECT id FROM t WHERE day >= DATE '2024-03-01' AND day < DATE '2024-09-01' ORDER BY id",
    "SELECT id FROM t WHERE a IN (1, 2, 7) OR d < 0 ORDER BY id",
    "SELECT id, a < 0 AND d > 1 FROM t ORDER BY id",
    "SELECT count(*) FROM t WHERE NOT (a > 0 AND s LIKE '%é%')",
    "SELECT sum(p) FROM t WHERE a >= 0 AND d <= 50 AND day > DATE '2024-01-15' AND s <> 'zz'",
    "SELECT id, a < b, a = b FROM t WHERE a >= b OR b IS NULL ORDER BY id",
]


def _rows(count: int) -> list[tuple[Any, ...]]:
    rng = random.Random(11)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    return [
        (
            i,
            rng.randint(0, 9),
            maybe(rng.randint(-5, 9)),
            maybe(rng.randint(-2000, 9000) / 100),
            maybe(rng.choice(["ab", "abc", "zz", "é", "aé", ""]) + rng.choice(["", "x"])),
            maybe(f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"),
            maybe(rng.randint(-5, 9)),
        )
        for i in range(count)
    ]


# Enough rows for several DuckDB vectors on two threads.
ROWS = _rows(9000)


def _skip_unless_built() -> None:
    if duckdb_extension.EXTENSION_PATH.is_file() or os.environ.get("CI") == "true":
        return
    pytest.skip("the native extension is not built: python -m enclave.build_duckdb_extension")


@pytest.fixture(scope="module")
def oracle() -> Iterator[Any]:
    con = duckdb.connect()
    con.execute(TABLE.format(enc=""))
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS)
    yield con
    con.close()


@pytest.fixture(scope="module", params=["native", "python"])
def ours(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if request.param == "native":
        _skip_unless_built()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVESQL_NATIVE_UDFS", "1" if request.param == "native" else "0")
        with enclave_connection(tmp_path_factory.mktemp(request.param)) as con:
            con.execute(TABLE.format(enc=RANDOMIZED))
            con.bulk_insert("t", ROWS)
            con.execute("SET threads = 2")
            _quiet(con, "SELECT count(*) FROM t WHERE a < 0")  # enables the enclave
            assert con._host.native_filters is (request.param == "native")
            yield con


@pytest.mark.parametrize("sql", QUERIES)
def test_answers_match_plaintext_duckdb(ours: Any, oracle: Any, sql: str) -> None:
    assert _quiet(ours, sql) == oracle.execute(sql).fetchall()


def test_native_filters_do_not_call_the_python_path(
    tmp_path: Path, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_unless_built()
    monkeypatch.setenv("ENCLAVESQL_NATIVE_UDFS", "1")
    with enclave_connection(tmp_path) as con:
        con.execute(TABLE.format(enc=RANDOMIZED))
        con.bulk_insert("t", ROWS[:3000])
        sql = "SELECT id FROM t WHERE a < 2 AND d > 0 AND a <> b ORDER BY id"
        first = _quiet(con, sql)
        gateway = con._host.enclave_gateway()

        def refuse(*_: Any) -> Any:
            raise AssertionError("the Python filter path ran")

        gateway.filter = refuse  # type: ignore[method-assign]
        gateway.compare = refuse  # type: ignore[method-assign]
        assert _quiet(con, sql) == first
        expected = "SELECT id FROM t WHERE id < 3000 AND a < 2 AND d > 0 AND a <> b ORDER BY id"
        assert first == oracle.execute(expected).fetchall()


def _connect(database: str, key_dir: Path) -> Any:
    return engine.connect(database, key_dir=str(key_dir), attestation_protocol="none")


def _database_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str, rows: int
) -> tuple[str, Any]:
    """A database file with the first ``rows`` of ROWS, and an open connection whose enclave
    predicates are native (switch "1") or Python UDFs ("0")."""
    if switch == "1":
        _skip_unless_built()
    monkeypatch.setenv("ENCLAVESQL_NATIVE_UDFS", switch)
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
    make_cmk(tmp_path)
    database = str(tmp_path / "db.duckdb")
    con = _connect(database, tmp_path)
    for statement in ENCLAVE_KEYS:
        con.execute(statement)
    con.execute(TABLE.format(enc=RANDOMIZED))
    con.bulk_insert("t", ROWS[:rows])
    return database, con


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_tampered_cell_is_refused_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    database, con = _database_on_path(tmp_path, monkeypatch, switch, 50)
    con.close()
    raw = duckdb.connect(database)
    cell = raw.execute("SELECT a FROM t WHERE a IS NOT NULL LIMIT 1").fetchone()
    assert cell is not None
    raw.execute(
        "UPDATE t SET a = ? WHERE a = ?", [cell[0][:-1] + bytes([cell[0][-1] ^ 1]), cell[0]]
    )
    raw.close()
    con = _connect(database, tmp_path)
    try:
        with pytest.raises(CellAuthenticationError):
            _quiet(con, "SELECT id FROM t WHERE a < 100")
        assert con._host.native_filters is (switch == "1")
    finally:
        con.close()


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_garbled_program_from_the_host_fails_the_statement_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    # A host that binds a program the client did not send (here: the right one, cut short)
    # gets a clear PEP 249 error from either filter, and no answer.
    database, con = _database_on_path(tmp_path, monkeypatch, switch, 50)
    real_ref = enclave_execution.constant_ref
    monkeypatch.setattr(enclave_execution, "constant_ref", lambda blob: real_ref(blob[:-1]))
    try:
        with pytest.raises(InternalError, match="predicate program is malformed"):
            _quiet(con, "SELECT id FROM t WHERE a < 100 AND d > 0")
        assert con._host.native_filters is (switch == "1")
        monkeypatch.setattr(enclave_execution, "constant_ref", real_ref)
        assert _quiet(con, "SELECT count(*) FROM t WHERE a < 100 AND d > 0")[0][0] > 0
    finally:
        con.close()


def test_a_constant_evicted_from_the_host_table_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _skip_unless_built()
    monkeypatch.setenv("ENCLAVESQL_NATIVE_UDFS", "1")
    if not duckdb_extension.available():
        pytest.fail("the extension is built but does not bind to this enclave library")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    assert duckdb_extension.load_into(con)
    duckdb_extension.put_constant(987_654_321, b"constant")
    duckdb_extension.drop_constant(987_654_321)
    with pytest.raises(duckdb.Error, match="no longer bound"):
        con.execute("SELECT __ee_filter_1('c'::BLOB, 77::UBIGINT, 987654321::UBIGINT)")
    failure = duckdb_extension.take_failure(77)
    assert isinstance(failure, InternalError) and "run it again" in str(failure)
    assert duckdb_extension.take_failure(77) is None  # taken once
    con.close()


_PROGRAM_REF = 987_654_000


@pytest.mark.parametrize(
    ("arguments", "program", "message"),
    [
        ("NULL::UBIGINT, 987654000::UBIGINT", pack_predicates([(1, 1, 1, b"")]), "NULL query id"),
        ("78::UBIGINT, NULL::UBIGINT", pack_predicates([(1, 1, 1, b"")]), "NULL predicate program"),
        ("78::UBIGINT, 987654000::UBIGINT", b"\x01\x00\x05", "malformed predicate program"),
        # A length beyond the blob, a second predicate for a one-predicate call, trailing bytes.
        ("78::UBIGINT, 987654000::UBIGINT", b"\x01\x00\x05\x01\xff\x00\x00\x00ab", "malformed"),
        ("78::UBIGINT, 987654000::UBIGINT", pack_predicates([(1, 5, 1, b"")] * 2), "malformed"),
        ("78::UBIGINT, 987654000::UBIGINT", pack_predicates([(1, 5, 1, b"")]) + b"x", "malformed"),
    ],
)
def test_malformed_bound_programs_fail_the_statement(
    monkeypatch: pytest.MonkeyPatch, arguments: str, program: bytes, message: str
) -> None:
    # The host binds the query id and the program; a bad one (a host bug, or a hostile host)
    # must fail the statement with a clear error, never reach the enclave half-read.
    _skip_unless_built()
    monkeypatch.setenv("ENCLAVESQL_NATIVE_UDFS", "1")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    try:
        assert duckdb_extension.load_into(con)
        duckdb_extension.put_constant(_PROGRAM_REF, program)
        with pytest.raises(duckdb.Error, match=message):
            con.execute(f"SELECT __ee_filter_1('cell'::BLOB, {arguments})").fetchall()
    finally:
        duckdb_extension.drop_constant(_PROGRAM_REF)
        duckdb_extension.take_failure(78)
        con.close()


@pytest.mark.parametrize("switch", ["1", "0"])
def test_two_connections_to_one_file_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    # Both share one DuckDB instance, hence one set of enclave functions (the first
    # connection's). Each keeps working after the other closes, and a tampered cell is still
    # CellAuthenticationError on the connection whose query read it.
    database, first = _database_on_path(tmp_path, monkeypatch, switch, 200)
    second = _connect(database, tmp_path)
    expected = sum(1 for row in ROWS[:200] if row[2] is not None and row[2] < 3)
    try:
        assert _quiet(first, "SELECT count(*) FROM t WHERE a < 3") == [(expected,)]
        assert _quiet(second, "SELECT count(*) FROM t WHERE a < 3") == [(expected,)]
        assert second._host.native_filters is (switch == "1")
        cell = second._host._con.execute("SELECT a FROM t WHERE id = 0").fetchall()[0][0]
        bad = bytes(cell[:-1]) + bytes([cell[-1] ^ 1])
        second._host._con.execute("UPDATE t SET a = ? WHERE id = 0", [bad])
        first.close()
        with pytest.raises(CellAuthenticationError):
            _quiet(second, "SELECT count(*) FROM t WHERE a < 3 OR a IS NULL")
    finally:
        first.close()
        second.close()
    # The last close released the file: DuckDB's default settings can open it again.
    duckdb.connect(database).close()

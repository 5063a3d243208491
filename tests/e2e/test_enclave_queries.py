"""Enclave queries end to end through engine.connect: the lazy session and its one warning,
per-query authorization as the host sees it, EXPLAIN, and a canary scan of what the host got.

The answers themselves are compared with plaintext DuckDB in tests/sql/enclave_*.test.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import engine
from enclave import duckdb_extension
from engine.client.client import Client
from engine.client.enclave_session import InsecureEnclaveWarning
from engine.client.normalization import normalize
from engine.connection import Connection
from engine.errors import (
    AttestationError,
    CellAuthenticationError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from engine.host.host import Host
from engine.host.recording import RecordingHost
from engine.predicate_program import pack_predicates, unpack_predicates
from tests.support.enclave_e2e import RANDOMIZED
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS

SETUP = (
    *ENCLAVE_KEYS,
    f"CREATE TABLE t (id INTEGER, amount BIGINT {RANDOMIZED}, name VARCHAR {RANDOMIZED})",
)
ROWS = [
    (1, 123_456_789, "CANARY-alpha"),
    (2, 987_654_321, "CANARY-beta"),
    (3, None, None),
    (4, -5, "zeta"),
]


@pytest.fixture(autouse=True)
def platform_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "platform"
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(directory))
    return directory


def _setup(connection: Connection) -> None:
    for statement in SETUP:
        connection.execute(statement)
    connection.cursor().executemany("INSERT INTO t VALUES (?, ?, ?)", ROWS)


@pytest.fixture()
def con(tmp_path: Path, key_dir: Path) -> Iterator[Connection]:
    connection = engine.connect(
        str(tmp_path / "db.duckdb"), key_dir=str(key_dir), attestation_protocol="none"
    )
    _setup(connection)
    yield connection
    connection.close()


def test_the_session_opens_on_the_first_enclave_query_and_warns_once(con: Connection) -> None:
    assert con.enclave_available
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(4,)]  # no enclave, no warning
    with pytest.warns(InsecureEnclaveWarning):
        assert con.execute("SELECT id FROM t WHERE amount > 0 ORDER BY id").fetchall() == [
            (1,),
            (2,),
        ]
    # A second enclave query reuses the session: no second warning (warnings are errors here).
    assert con.execute("SELECT id FROM t WHERE amount < ?", [0]).fetchall() == [(4,)]
    summary = con.attestation_summary()
    assert summary is not None and summary.protocol == "none" and not summary.verified


def test_without_attestation_the_enclave_is_not_used(tmp_path: Path, key_dir: Path) -> None:
    connection = engine.connect(str(tmp_path / "plain.duckdb"), key_dir=str(key_dir))
    try:
        _setup(connection)
        assert not connection.enclave_available
        with pytest.raises(ProgrammingError, match="attestation_protocol"):
            connection.execute("SELECT id FROM t WHERE amount > 0")
    finally:
        connection.close()


class _Attacker:
    """Wraps the host's gateway: before each comparison it tries what a malicious host would."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.real = gateway.compare
        self.real_filter = gateway.filter
        self.refused: list[str] = []
        self.query_ids: list[int] = []

    def compare(self, query_id: int, cek_id: int, type_code: int, operator: int, *rest: Any) -> Any:
        constant, cells = rest[0], rest[1]
        self.query_ids.append(query_id)
        attempts = {
            # Another row's cell as the comparand: a comparison oracle for values nobody asked.
            "other constant": (operator, bytes(cells[0].as_py()), cells),
            # The granted constant with another operator.
            "other operator": (operator % 6 + 1, constant, cells),
        }
        for name, (op, blob, data) in attempts.items():
            try:
                self.real(query_id, cek_id, type_code, op, blob, data)
            except OperationalError as error:
                assert "authorize" in str(error)
                self.refused.append(name)
        return self.real(query_id, cek_id, type_code, operator, *rest)

    def filter(self, query_id: int, predicates: Any, columns: Any) -> Any:
        # The one-call-per-conjunction path: the same attempts, through the same gateway.
        for (cek_id, type_code, operator, constant), cells in zip(predicates, columns, strict=True):
            self.compare(query_id, cek_id, type_code, operator, constant, cells)
        return self.real_filter(query_id, predicates, columns)


@pytest.fixture()
def python_path_con(
    tmp_path: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Connection]:
    """A connection whose enclave predicates run as Python UDFs through the gateway, where a
    wrapper can play the malicious host (the native extension calls the enclave directly)."""
    monkeypatch.setenv("ENCLAVESQL_NATIVE_UDFS", "0")
    connection = engine.connect(
        str(tmp_path / "python.duckdb"), key_dir=str(key_dir), attestation_protocol="none"
    )
    _setup(connection)
    yield connection
    connection.close()


def test_the_host_cannot_reuse_an_authorization_for_another_constant(
    python_path_con: Connection,
) -> None:
    con = python_path_con
    gateway = con._host.enclave_gateway()  # type: ignore[attr-defined]
    attacker = _Attacker(gateway)
    gateway.compare = attacker.compare  # the UDFs look the methods up on every call
    gateway.filter = attacker.filter
    assert _quiet(con, "SELECT id FROM t WHERE amount > ? ORDER BY id", [0]) == [(1,), (2,)]
    assert attacker.refused and set(attacker.refused) == {"other constant", "other operator"}
    # After the statement the query context is gone: the same call is refused as well.
    query_id = attacker.query_ids[0]
    with pytest.raises(OperationalError, match="no such query"):
        attacker.real(query_id, 1, 1, 5, b"", pa.array([], pa.binary()))


def test_the_native_path_cannot_swap_the_constant_behind_a_ref(
    con: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The native extension reads each predicate's constant from a table the host fills: a
    # malicious host that puts another ciphertext (here: another row's cell) into the program
    # behind the ref is refused by the enclave's per-query authorization, exactly as on the
    # Python path.
    if not con._host.native_filters:  # type: ignore[attr-defined]
        pytest.skip("the native extension is not loaded here")
    other_cell = con._host._con.execute("SELECT amount FROM t WHERE id = 1").fetchall()[0][0]  # type: ignore[attr-defined]
    real_put = duckdb_extension.put_constant
    swapped: list[int] = []

    def swap(ref: int, blob: bytes) -> None:
        try:
            [(cek_id, type_code, operator, _)] = unpack_predicates(blob, 1)
        except InternalError:
            real_put(ref, blob)  # not a one-predicate program (a stage layout)
            return
        swapped.append(ref)
        real_put(ref, pack_predicates([(cek_id, type_code, operator, bytes(other_cell))]))

    monkeypatch.setattr(duckdb_extension, "put_constant", swap)
    with pytest.raises(OperationalError, match="authoriz"):
        _quiet(con, "SELECT id FROM t WHERE amount > ? ORDER BY id", [-77_777])
    assert swapped


def test_explain_says_where_each_operation_runs(con: Connection) -> None:
    sql = "SELECT id, SUM(amount) FROM t WHERE name LIKE 'CANARY%' AND id > 0 GROUP BY id"
    rows = con.explain_operations(sql)
    assert ("LIKE", "t.name", "enclave") in rows
    assert ("SUM", "t.amount", "enclave") in rows
    text = con.explain(sql)
    assert "enclave" in text and "CANARY" not in text
    # The markers the enclave rewrite adds are named for what they are, not as lifted literals
    # (the pattern travels inside the encrypted constant; `id > 0` stays in the text).
    assert "? 1: the enclave query id" in text
    assert "encrypted constants of an enclave filter's predicates" in text
    assert "a literal lifted out of the text" not in text
    cursor = con.cursor().execute("EXPLAIN " + sql)
    assert [d[0] for d in cursor.description] == ["operation", "column", "where"]
    assert set(cursor.fetchall()) == set(rows)
    plain = con.explain_operations("SELECT id FROM t WHERE id = 1")
    assert plain == [("query", "", "duckdb plaintext")]


def test_the_host_records_no_plaintext_of_enclave_queries(tmp_path: Path, key_dir: Path) -> None:
    host = RecordingHost(Host(str(tmp_path / "canary.duckdb")))
    connection = Connection(host, Client(key_dir=str(key_dir)), attestation_protocol="none")
    try:
        _setup(connection)
        host.calls.clear()
        assert _quiet(connection, "SELECT id FROM t WHERE name = 'CANARY-alpha'") == [(1,)]
        assert _quiet(connection, "SELECT id FROM t WHERE name LIKE ?", ["CANARY-b%"]) == [(2,)]
        total = 123_456_789 + 987_654_321 - 5
        assert _quiet(connection, "SELECT SUM(amount), MAX(name) FROM t") == [(total, "zeta")]
        # SUM of an integer column comes back as a Python int, as DuckDB's HUGEINT does.
        assert type(_quiet(connection, "SELECT SUM(amount) FROM t")[0][0]) is int
        assert _quiet(connection, "SELECT name FROM t WHERE id < 3 ORDER BY name") == [
            ("CANARY-alpha",),
            ("CANARY-beta",),
        ]
        grouped = "SELECT name, COUNT(*) FROM t GROUP BY name ORDER BY name"
        assert _quiet(connection, grouped)[0] == ("CANARY-alpha", 1)
        joined = "SELECT a.id FROM t AS a JOIN t AS b ON a.name = b.name ORDER BY a.id"
        assert _quiet(connection, joined) == [(1,), (2,), (4,)]
        haystack = b"".join(
            pickle.dumps(call.arguments) + repr(call.arguments).encode() for call in host.calls
        )
        needles = [
            b"CANARY",
            "CANARY".encode("utf-16-le"),
            str(total).encode(),
            normalize([total], "DECIMAL(38,0)").to_pylist()[0],
            normalize([123_456_789], "BIGINT").to_pylist()[0],
        ]
        for needle in needles:
            assert needle not in haystack
        assert any(call.method == "execute" for call in host.calls)
    finally:
        connection.close()


def test_having_and_order_by_enclave_aggregates_leave_no_plaintext_on_the_host(
    tmp_path: Path, key_dir: Path
) -> None:
    host = RecordingHost(Host(str(tmp_path / "having.duckdb")))
    connection = Connection(host, Client(key_dir=str(key_dir)), attestation_protocol="none")
    try:
        _setup(connection)
        host.calls.clear()
        even = 987_654_321 - 5  # SUM(amount) of ids 2 and 4; ids 1 and 3 sum to 123_456_789
        having = (
            "SELECT id % 2 AS p, SUM(amount) AS s FROM t GROUP BY id % 2 "
            "HAVING SUM(amount) > 555555555 AND MAX(name) >= ? ORDER BY s DESC"
        )
        assert _quiet(connection, having, ["CANARY-omega"]) == [(0, even)]
        ordered = "SELECT id % 2 AS p FROM t GROUP BY id % 2 ORDER BY AVG(amount) DESC LIMIT 1"
        assert _quiet(connection, ordered) == [(0,)]
        haystack = b"".join(
            pickle.dumps(call.arguments) + repr(call.arguments).encode() for call in host.calls
        )
        needles = [
            b"CANARY",
            str(even).encode(),
            b"555555555",
            normalize([even], "DECIMAL(38,0)").to_pylist()[0],
            normalize([555_555_555], "DECIMAL(38,0)").to_pylist()[0],
            normalize([even / 2], "DOUBLE").to_pylist()[0],
        ]
        for needle in needles:
            assert needle not in haystack
        assert any(call.method == "execute" for call in host.calls)
    finally:
        connection.close()


def test_dml_with_enclave_predicates(con: Connection) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureEnclaveWarning)
        cursor = con.cursor()
        cursor.execute("UPDATE t SET id = id + 10 WHERE amount > ? AND name LIKE 'CANARY%'", [0])
        assert cursor.rowcount == 2
        # executemany runs each row with its own package.
        cursor.executemany("DELETE FROM t WHERE amount < ?", [(0,), (200_000_000,)])
        remaining = con.execute("SELECT id, amount FROM t ORDER BY id").fetchall()
    assert remaining == [(3, None), (12, 987_654_321)]


def test_a_tampered_cell_fails_the_query_with_the_one_authentication_error(
    con: Connection,
) -> None:
    raw = con._host._con  # type: ignore[attr-defined]  # the untrusted side, tampering
    cell = bytearray(raw.execute("SELECT amount FROM t WHERE id = 2").fetchone()[0])
    cell[-1] ^= 1
    raw.execute("UPDATE t SET amount = ? WHERE id = 2", [bytes(cell)])
    for sql in (
        "SELECT id FROM t WHERE amount > 0",  # a UDF inside DuckDB
        "SELECT SUM(amount) FROM t",  # an aggregate after DuckDB
        "SELECT id FROM t ORDER BY amount",  # ranks between the stages
    ):
        with pytest.raises(CellAuthenticationError) as raised:
            _quiet(con, sql)
        assert "987654321" not in str(raised.value)
    # The connection still works for everything else.
    assert _quiet(con, "SELECT id FROM t WHERE name = 'zeta'") == [(4,)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from enclave.attestation.policy import Policy
    from enclave.attestation.service import start_in_thread
    from enclave.binding import enclave_info

    platform = tmp_path_factory.mktemp("service_platform")
    policy = Policy.from_mapping(
        {"allowed_measurements": [enclave_info().measurement.hex()], "min_svn": 1},
        platform_dir=platform,
    )
    url, stop = start_in_thread(policy)
    yield url, platform
    stop()


def test_an_attested_connection_pins_measurements_on_top_of_the_service(
    tmp_path: Path,
    key_dir: Path,
    service: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from enclave.binding import enclave_info

    url, platform = service
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(platform))
    measurement = enclave_info().measurement.hex()
    good = engine.connect(
        str(tmp_path / "good.duckdb"),
        key_dir=str(key_dir),
        attestation_protocol="service",
        attestation_url=url,
        enclave_measurements=[measurement],
    )
    try:
        _setup(good)
        assert good.execute("SELECT id FROM t WHERE amount < 0").fetchall() == [(4,)]
        summary = good.attestation_summary()
        assert summary.verified and summary.measurement == measurement
    finally:
        good.close()
    pinned = engine.connect(
        str(tmp_path / "pinned.duckdb"),
        key_dir=str(key_dir),
        attestation_protocol="service",
        attestation_url=url,
        enclave_measurements=["00" * 32],
    )
    try:
        _setup(pinned)
        with pytest.raises(AttestationError, match="measurement"):
            pinned.execute("SELECT id FROM t WHERE amount < 0")
        assert pinned.attestation_summary() is None
    finally:
        pinned.close()

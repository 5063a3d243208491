"""A connection whose enclave session the enclave no longer knows (closed behind its back, as an
idle-expired session is) opens a new session and retries the statement once; a second refusal
reaches the caller as EnclaveSessionError. The enclave's own idle bound is tested in C
(native/tests/test_enclave.c, test_session_expiry), where a test hook moves its clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.connection import Connection
from engine.errors import EnclaveSessionError, OperationalError
from engine.host.enclave_gateway import native_enclave_available
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection, quiet_fetchall

if not native_enclave_available():
    pytest.skip("native enclave not built yet", allow_module_level=True)

QUERY = "SELECT id FROM t WHERE amount > ? ORDER BY id"
AMOUNTS = [5, 50, 7, 70, 9]
EXPECTED = [(i,) for i, amount in enumerate(AMOUNTS) if amount > 8]


@pytest.fixture()
def con(tmp_path: Path) -> Iterator[Connection]:
    with enclave_connection(tmp_path) as connection:
        connection.execute(f"CREATE TABLE t (id INTEGER, amount BIGINT {RANDOMIZED})")
        connection.cursor().executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(AMOUNTS)))
        yield connection


def _session(con: Connection) -> Any:
    session = con._client.current_enclave_session
    assert session is not None
    return session


def test_a_forgotten_session_is_replaced_and_the_statement_retried(con: Connection) -> None:
    assert quiet_fetchall(con, QUERY, [8]) == EXPECTED
    first = _session(con)
    # What the enclave does to an idle-expired session: it forgets it.
    con._host.enclave_gateway().close_session(first.session_id)
    assert quiet_fetchall(con, QUERY, [8]) == EXPECTED
    second = _session(con)
    assert first.closed
    assert second is not first and second.session_id != first.session_id
    # The new session keeps working.
    assert quiet_fetchall(con, QUERY, [60]) == [(3,)]


def test_a_second_refusal_reaches_the_caller(con: Connection) -> None:
    assert quiet_fetchall(con, QUERY, [8]) == EXPECTED
    gateway = con._host.enclave_gateway()
    real_begin = gateway.begin_query
    attempts: list[int] = []

    def forget_then_begin(session_id: int, package: bytes, statement_text: str) -> int:
        # The enclave forgets every session just before its package arrives.
        attempts.append(session_id)
        gateway.close_session(session_id)
        return real_begin(session_id, package, statement_text)

    gateway.begin_query = forget_then_begin  # type: ignore[method-assign]
    try:
        with pytest.raises(EnclaveSessionError, match="reconnect") as raised:
            quiet_fetchall(con, QUERY, [8])
    finally:
        gateway.begin_query = real_begin  # type: ignore[method-assign]
    assert isinstance(raised.value, OperationalError)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    # The connection recovers on the next statement.
    assert quiet_fetchall(con, QUERY, [8]) == EXPECTED

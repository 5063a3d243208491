"""ORDER BY <encrypted column> ... LIMIT through engine.connect: the host asks the enclave for
the first k rows (TOP_K), not for a ranking of every row, and cannot widen k or fall back to a
full ranking on its own. The answers themselves are compared with plaintext DuckDB in
tests/sql/enclave_order.test and tests/sql/test_enclave_order_differential.py."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import engine
from engine.connection import Connection
from engine.errors import OperationalError, ProgrammingError
from tests.support.enclave_e2e import RANDOMIZED
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS

SETUP = (
    *ENCLAVE_KEYS,
    f"CREATE TABLE t (id INTEGER, amount BIGINT {RANDOMIZED})",
)
# Amounts 0..39 twice over (ids 0..79), and two NULLs (ids 80, 81).
ROWS = [(i, i % 40) for i in range(80)] + [(80, None), (81, None)]


@pytest.fixture()
def con(tmp_path: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Connection]:
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
    connection = engine.connect(
        str(tmp_path / "db.duckdb"), key_dir=str(key_dir), attestation_protocol="none"
    )
    for statement in SETUP:
        connection.execute(statement)
    connection.cursor().executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    yield connection
    connection.close()


class _Spy:
    """Records what the host got back from each ranking call of the gateway."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.real_top_k, self.real_rank = gateway.top_k, gateway.rank
        self.top_k_answers: list[list[int | None]] = []
        self.rank_calls = 0
        gateway.top_k, gateway.rank = self.top_k, self.rank

    def top_k(self, *args: Any) -> Any:
        answer = self.real_top_k(*args)
        self.top_k_answers.append(answer.to_pylist())
        return answer

    def rank(self, *args: Any) -> Any:
        self.rank_calls += 1
        return self.real_rank(*args)


def test_order_by_limit_asks_the_enclave_for_the_first_rows_only(con: Connection) -> None:
    spy = _Spy(con._host.enclave_gateway())  # type: ignore[attr-defined]
    got = _quiet(con, "SELECT id, amount FROM t ORDER BY amount DESC, id LIMIT 3 OFFSET 1")
    assert got == [(79, 39), (38, 38), (78, 38)]
    assert spy.rank_calls == 0 and len(spy.top_k_answers) == 1
    answer = spy.top_k_answers[0]
    # k = LIMIT + OFFSET = 4: the two 39s and the two 38s; every other row is just "not
    # selected" (-1), so the host learns nothing about their order.
    selected = {row: rank for row, rank in enumerate(answer) if rank != -1}
    assert selected == {39: 1, 79: 1, 38: 0, 78: 0}


def test_ties_at_the_boundary_are_all_kept_for_the_secondary_key(con: Connection) -> None:
    spy = _Spy(con._host.enclave_gateway())  # type: ignore[attr-defined]
    # k = 1, but amount 0 appears twice: both rows come back, and id DESC picks 40.
    assert _quiet(con, "SELECT id FROM t ORDER BY amount, id DESC LIMIT 1") == [(40,)]
    assert sum(rank != -1 for rank in spy.top_k_answers[0]) == 2


def test_nulls_first_and_a_parameter_limit(con: Connection) -> None:
    spy = _Spy(con._host.enclave_gateway())  # type: ignore[attr-defined]
    sql = "SELECT id, amount FROM t ORDER BY amount NULLS FIRST, id LIMIT ? OFFSET ?"
    assert _quiet(con, sql, [3, 1]) == [(81, None), (0, 0), (40, 0)]
    # The two NULLs are selected (null), then the first value (its two rows).
    assert spy.top_k_answers[0].count(None) == 2
    assert sum(rank is not None and rank >= 0 for rank in spy.top_k_answers[0]) == 2
    assert _quiet(con, "SELECT id FROM t ORDER BY amount DESC, id LIMIT ?", [None])[:2] == [
        (39,),
        (79,),
    ]
    with pytest.raises(ProgrammingError, match="non-negative integer"):
        _quiet(con, "SELECT id FROM t ORDER BY amount LIMIT ?", [-1])


def test_a_plaintext_first_key_keeps_the_full_ranking(con: Connection) -> None:
    spy = _Spy(con._host.enclave_gateway())  # type: ignore[attr-defined]
    sql = "SELECT id FROM t ORDER BY id % 2, amount DESC, id LIMIT 2"
    assert _quiet(con, sql) == [(38,), (78,)]
    assert spy.rank_calls == 1 and not spy.top_k_answers


def test_the_host_cannot_widen_k_or_rank_every_row(con: Connection) -> None:
    gateway = con._host.enclave_gateway()  # type: ignore[attr-defined]
    real_top_k, real_rank = gateway.top_k, gateway.rank
    refused: list[str] = []

    def attacker(query_id: int, cek_id: int, type_code: int, constant: bytes, cells: Any) -> Any:
        k, descending, nulls_first = struct.unpack("<QBB", constant)
        attempts = {
            "a larger k": lambda: real_top_k(
                query_id, cek_id, type_code, struct.pack("<QBB", k + 1, descending, 0), cells
            ),
            "the other direction": lambda: real_top_k(
                query_id, cek_id, type_code, struct.pack("<QBB", k, 1 - descending, 0), cells
            ),
            "a full ranking": lambda: real_rank(query_id, cek_id, type_code, cells),
        }
        for name, attempt in attempts.items():
            with pytest.raises(OperationalError, match="authorize"):
                attempt()
            refused.append(name)
        return real_top_k(query_id, cek_id, type_code, constant, cells)

    gateway.top_k = attacker
    assert _quiet(con, "SELECT id FROM t ORDER BY amount DESC, id LIMIT 2") == [(39,), (79,)]
    assert refused == ["a larger k", "the other direction", "a full ranking"]
    with pytest.raises(OperationalError, match="no such query"):
        real_top_k(1, 1, 1, bytes(10), pa.array([], pa.binary()))


def test_each_literal_limit_and_direction_gets_its_own_grant(con: Connection) -> None:
    """The same statement shape with other literals (plans are cached per shape on the client)
    must not reuse another statement's k or direction."""
    spy = _Spy(con._host.enclave_gateway())  # type: ignore[attr-defined]
    for limit, offset in ((2, 0), (3, 1), (1, 2), (5, 0)):
        sql = f"SELECT id FROM t ORDER BY amount DESC, id LIMIT {limit} OFFSET {offset}"
        expected = [(39,), (79,), (38,), (78,), (37,), (77,)][offset : offset + limit]
        assert _quiet(con, sql) == expected, sql
    assert _quiet(con, "SELECT id FROM t ORDER BY amount ASC, id LIMIT 2") == [(0,), (40,)]
    # Each k covered LIMIT + OFFSET rows and their ties: 2, 4, 3 (+1 tie), 5 (+1 tie) and 2.
    assert [sum(r is not None and r >= 0 for r in a) for a in spy.top_k_answers] == [2, 4, 4, 6, 2]

"""The native stage aggregate (__ee_stage_k, enclave.h 5e) against the LIST path and plaintext
DuckDB: the same answers with NULLs, empty groups, no rows, many groups over several vectors
and two threads, plaintext slots; overflow is DataError and a tampered cell
CellAuthenticationError on both paths; a stage larger than one enclave call keeps LISTs.
"""

from __future__ import annotations

import decimal
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import engine
from engine.connection import Connection
from engine.errors import CellAuthenticationError, DataError
from engine.host.host import Host
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS, make_cmk

TABLE = (
    "CREATE TABLE t (id INTEGER, g INTEGER, k INTEGER, a INTEGER {enc}, "
    "d DECIMAL(12,2) {enc}, f DOUBLE {enc}, p DECIMAL(9,3), q BIGINT, m INTEGER {enc})"
)
QUERIES = [
    "SELECT g, SUM(a), AVG(a), SUM(d), AVG(d), SUM(f) FROM t GROUP BY g",
    "SELECT g, SUM(d * (1 - p)), AVG(d * q), SUM(a * 2 + q), COUNT(*) FROM t GROUP BY g",
    # Many small groups: several vectors, states merged across DuckDB's threads.
    "SELECT k, SUM(d), AVG(a), SUM(d * (1 + p)) FROM t GROUP BY k",
    # No GROUP BY, and a filter that keeps no row: one empty group.
    "SELECT SUM(a), AVG(d), SUM(d * p), COUNT(*) FROM t",
    "SELECT SUM(a), AVG(d), SUM(d * p), COUNT(*) FROM t WHERE id < 0",
    # A group whose m is always NULL, beside MAX (the LIST path's own calls).
    "SELECT g, SUM(m), AVG(m), MAX(d), SUM(d) FROM t GROUP BY g",
    # The encrypted filter and the stage in one statement.
    "SELECT g, SUM(d), AVG(f) FROM t WHERE a < 3 GROUP BY g",
]


def _rows(count: int) -> list[tuple[Any, ...]]:
    rng = random.Random(5)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    groups = [rng.randint(0, 4) for _ in range(count)]
    return [
        (
            i,
            groups[i],
            rng.randint(0, 700),
            maybe(rng.randint(-50, 90)),
            maybe(decimal.Decimal(rng.randint(-200000, 900000)) / 100),
            maybe(rng.uniform(-10, 10)),
            maybe(decimal.Decimal(rng.randint(0, 999)) / 1000),
            maybe(rng.randint(-9, 9)),
            None if groups[i] == 3 else maybe(rng.randint(0, 9)),  # all NULL in group 3
        )
        for i in range(count)
    ]


ROWS = _rows(6000)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Any]:
    con = duckdb.connect()
    con.execute(TABLE.format(enc=""))
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ROWS)
    yield con
    con.close()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    with enclave_connection(tmp_path_factory.mktemp("stage")) as con:
        con.execute(TABLE.format(enc=RANDOMIZED))
        con.bulk_insert("t", ROWS)
        con.execute("SET threads = 2")
        _quiet(con, "SELECT count(*) FROM t WHERE a < 0")  # enables the enclave
        yield con


def _same(mine: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> bool:
    def close(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is b
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        return bool(a == b)

    return len(mine) == len(theirs) and all(
        len(r) == len(s) and all(close(a, b) for a, b in zip(r, s, strict=True))
        for r, s in zip(sorted(mine, key=repr), sorted(theirs, key=repr), strict=True)
    )


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = Host._run

    def run(self: Host, sql: str, parameters: Any) -> Any:
        seen.append(sql)
        return original(self, sql, parameters)

    monkeypatch.setattr(Host, "_run", run)
    return seen


@pytest.mark.parametrize("path", ["native", "list"])
@pytest.mark.parametrize("sql", QUERIES)
def test_answers_match_plaintext_duckdb_on_both_paths(
    ours: Connection, oracle: Any, monkeypatch: pytest.MonkeyPatch, sql: str, path: str
) -> None:
    if path == "native" and not ours._host.native_filters:
        pytest.skip("the native extension is not loaded")
    monkeypatch.setenv("ENCLAVESQL_NATIVE_AGGREGATES", "1" if path == "native" else "0")
    statements = _statements(monkeypatch)
    mine = _quiet(ours, sql)
    assert _same(mine, oracle.execute(sql).fetchall()), (mine[:3], sql)
    native = any("__EE_STAGE_" in statement for statement in statements)
    assert native is (path == "native")


def test_a_stage_past_thirty_two_outputs_keeps_lists(
    ours: Connection, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thirty-three outputs: more than one stage call takes, so the LIST path runs (in batches).
    monkeypatch.setenv("ENCLAVESQL_NATIVE_AGGREGATES", "1")
    statements = _statements(monkeypatch)
    items = ", ".join(f"SUM(d * {n + 2})" for n in range(33))
    sql = f"SELECT g, {items} FROM t GROUP BY g"
    assert _same(_quiet(ours, sql), oracle.execute(sql).fetchall())
    assert not any("__EE_STAGE_" in statement for statement in statements)


@pytest.mark.parametrize("switch", ["1", "0"])
def test_overflow_is_a_data_error_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv("ENCLAVESQL_NATIVE_AGGREGATES", switch)
    with enclave_connection(tmp_path) as con:
        con.execute(
            f"CREATE TABLE big (g INTEGER, x DECIMAL(38,0) {RANDOMIZED}, y DECIMAL(38,0) "
            f"{RANDOMIZED})"
        )
        huge = decimal.Decimal(6 * 10**37)
        con.bulk_insert("big", [(0, huge, 1), (0, huge, 2), (1, 1, huge)])
        # Each value fits DECIMAL(38); the sum of group 0 does not.
        with pytest.raises(DataError):
            _quiet(con, "SELECT g, SUM(x), SUM(y) FROM big GROUP BY g")
        assert _quiet(con, "SELECT g, SUM(y), AVG(x) FROM big GROUP BY g ORDER BY g") == [
            (0, decimal.Decimal(3), float(huge)),
            (1, huge, 1.0),
        ]


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_tampered_cell_is_refused_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv("ENCLAVESQL_NATIVE_AGGREGATES", switch)
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
    make_cmk(tmp_path)
    database = str(tmp_path / "db.duckdb")
    con = engine.connect(database, key_dir=str(tmp_path), attestation_protocol="none")
    for statement in ENCLAVE_KEYS:
        con.execute(statement)
    con.execute(TABLE.format(enc=RANDOMIZED))
    con.bulk_insert("t", ROWS[:3000])
    con.close()
    raw = duckdb.connect(database)
    cell = raw.execute("SELECT d FROM t WHERE d IS NOT NULL AND id > 2500 LIMIT 1").fetchone()
    assert cell is not None
    raw.execute(
        "UPDATE t SET d = ? WHERE d = ?", [cell[0][:-1] + bytes([cell[0][-1] ^ 1]), cell[0]]
    )
    raw.close()
    con = engine.connect(database, key_dir=str(tmp_path), attestation_protocol="none")
    try:
        with pytest.raises(CellAuthenticationError):
            _quiet(con, "SELECT g, SUM(d), AVG(d * p) FROM t GROUP BY g")
    finally:
        con.close()

"""Staged enclave queries end to end: what the enclave is handed by the stage-zero reads (the
WHERE terms pushed below an equi-join shrink it) and a canary scan of everything the host got
for stage three (HAVING over a grouped enclave key), stage zero (grouping in a subquery,
IN (subquery)) and set operations.

The answers are compared with plaintext DuckDB in tests/sql/enclave_*.test; here they are
checked against values computed in Python from the inserted rows.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.client.client import Client
from engine.client.normalization import normalize
from engine.connection import Connection
from engine.host.host import Host
from engine.host.recording import RecordingHost
from tests.support.enclave_e2e import RANDOMIZED
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS

SETUP = (
    *ENCLAVE_KEYS,
    f"CREATE TABLE people (id INTEGER, name VARCHAR {RANDOMIZED}, score BIGINT {RANDOMIZED})",
    f"CREATE TABLE visits (vid INTEGER, who VARCHAR {RANDOMIZED}, cost BIGINT {RANDOMIZED})",
)
NAMES = ["CANARY-ann", "CANARY-bo", "CANARY-cy", None]
PEOPLE = [(i, NAMES[i % 4], 1_000_003 * (i % 5)) for i in range(40)]
VISITS = [(100 + i, NAMES[i % 3], 7_000_001 * (i % 6)) for i in range(30)]


@pytest.fixture()
def recorded(
    tmp_path: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Connection, RecordingHost, list[int]]]:
    """A connection over a recording host, and the cell counts of every GROUP call."""
    monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
    host = RecordingHost(Host(str(tmp_path / "db.duckdb")))
    connection = Connection(host, Client(key_dir=str(key_dir)), attestation_protocol="none")
    for statement in SETUP:
        connection.execute(statement)
    connection.cursor().executemany("INSERT INTO people VALUES (?, ?, ?)", PEOPLE)
    connection.cursor().executemany("INSERT INTO visits VALUES (?, ?, ?)", VISITS)
    gateway = host.host.enclave_gateway()
    real_group = gateway.group
    grouped: list[int] = []

    def counting_group(query_id: int, cek_id: int, type_code: int, cells: pa.Array) -> Any:
        grouped.append(len(cells))
        return real_group(query_id, cek_id, type_code, cells)

    monkeypatch.setattr(gateway, "group", counting_group)
    host.calls.clear()
    yield connection, host, grouped
    connection.close()


def test_where_terms_below_an_equi_join_shrink_what_the_enclave_sees(
    recorded: tuple[Connection, RecordingHost, list[int]],
) -> None:
    connection, _, grouped = recorded
    sql = (
        "SELECT p.id, v.vid FROM people AS p JOIN visits AS v ON p.name = v.who "
        "WHERE p.id < ? AND v.cost > ? AND p.score >= 0 AND p.id + v.vid > 0"
    )
    rows = _quiet(connection, sql, [10, 14_000_002])
    left = [p for p in PEOPLE if p[0] < 10 and p[2] >= 0]
    right = [v for v in VISITS if v[2] > 14_000_002]
    expected = sorted(
        (p[0], v[0]) for p in left for v in right if p[1] is not None and p[1] == v[1]
    )
    assert sorted(rows) == expected and expected
    # One GROUP call over the rows that pass each side's own terms, not over both tables.
    assert grouped == [len(left) + len(right)]
    assert grouped[0] < len(PEOPLE) + len(VISITS)


def test_a_left_join_filters_only_its_preserved_side(
    recorded: tuple[Connection, RecordingHost, list[int]],
) -> None:
    connection, _, grouped = recorded
    sql = (
        "SELECT p.id, v.vid FROM people AS p LEFT JOIN visits AS v ON p.name = v.who "
        "WHERE p.id < 6 AND v.cost IS NULL"
    )
    rows = _quiet(connection, sql)
    expected = []
    for person in (p for p in PEOPLE if p[0] < 6):
        matches = [v for v in VISITS if person[1] is not None and v[1] == person[1]]
        if not matches:
            expected.append((person[0], None))
        expected += [(person[0], v[0]) for v in matches if v[2] is None]
    assert sorted(rows, key=repr) == sorted(expected, key=repr)
    # The padded side keeps all its rows: a term on it would turn matches into NULL rows.
    assert grouped == [6 + len(VISITS)]


def test_staged_queries_leave_no_plaintext_on_the_host(
    recorded: tuple[Connection, RecordingHost, list[int]],
) -> None:
    connection, host, grouped = recorded
    by_name: dict[str | None, int] = {}
    for _, name, score in PEOPLE:
        by_name[name] = by_name.get(name, 0) + score
    threshold = 20_000_000
    having = (
        "SELECT name, SUM(score) AS s FROM people GROUP BY name HAVING SUM(score) > ? "
        "ORDER BY s DESC, name"
    )
    expected = sorted(  # ties by name, NULL last (DuckDB's default for ascending keys)
        ((n, s) for n, s in by_name.items() if s > threshold),
        key=lambda r: (-r[1], r[0] is None, r[0] or ""),
    )
    assert len({s for _, s in expected}) < len(expected)  # the data has a tie to break
    assert _quiet(connection, having, [threshold]) == expected
    distinct = "SELECT COUNT(*) FROM (SELECT DISTINCT who FROM visits)"
    assert _quiet(connection, distinct) == [(len({v[1] for v in VISITS}),)]
    semi = "SELECT COUNT(*) FROM people WHERE name NOT IN (SELECT who FROM visits)"
    assert _quiet(connection, semi) == [(0,)]  # visits.who holds a NULL
    union = "SELECT name FROM people UNION SELECT who FROM visits"
    assert sorted(_quiet(connection, union), key=repr) == sorted(
        [(n,) for n in set(NAMES)], key=repr
    )
    assert grouped  # the stages did call the enclave
    haystack = b"".join(
        pickle.dumps(call.arguments) + repr(call.arguments).encode() for call in host.calls
    )
    needles = [
        b"CANARY",
        str(threshold).encode(),
        normalize([threshold], "DECIMAL(38,0)").to_pylist()[0],
        normalize([1_000_003], "BIGINT").to_pylist()[0],
    ]
    for needle in needles:
        assert needle not in haystack

"""Concurrency and load on encrypted tables: threads sharing one connection (a cursor each),
threads with a connection each (what ``threadsafety = 1`` promises), and processes that each
open their own connection to one file, a few thousand mixed statements in all.

Each worker owns its own ids, checks every read against its own model of its rows while it runs,
and the final table must equal a serial replay of the same statements on a fresh file. Every
join has a timeout, so a deadlock fails instead of hanging.

What DuckDB allows across processes (tested below): a process that opens the file read-write
holds it exclusively, so any other process's ``engine.connect``, read-only or not, raises
OperationalError until it closes; several processes may open it with ``read_only=True`` at
once. Writer processes therefore take turns: connect, run a chunk, close.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import errors
from engine.client.keystores import build_registry

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
SETUP = (
    "CREATE COLUMN MASTER KEY cmk WITH "
    "(KEY_STORE_PROVIDER_NAME = 'PEM_FILE', KEY_PATH = 'cmk.pem')",
    "CREATE COLUMN ENCRYPTION KEY cek WITH VALUES "
    "(COLUMN_MASTER_KEY = cmk, ALGORITHM = 'RSA_OAEP')",
    "CREATE TABLE load (id INTEGER PRIMARY KEY, owner INTEGER, "
    f"det VARCHAR {ENC.format('DETERMINISTIC')}, rnd BIGINT {ENC.format('RANDOMIZED')})",
)
STATE = "SELECT id, owner, det, rnd FROM load ORDER BY id"
JOIN_TIMEOUT_S = 120.0  # generous: only a deadlock or a hang gets near it
PROCESS_CHUNK = 50


@dataclass(frozen=True)
class Op:
    """One statement of a workload, with the answer a read must give (None for writes)."""

    kind: str  # execute | executemany | bulk
    sql: str
    parameters: Any
    expected: list[tuple[Any, ...]] | None = None


def workload(owner: int, count: int, seed: int) -> list[Op]:
    """``count`` mixed statements on the rows of ``owner`` (ids owner*100000 + n), with the
    expected answer of each read computed from a model of those rows, not from the engine.

    >>> [op.kind for op in workload(1, 3, seed=0)]
    ['execute', 'execute', 'execute']
    """
    rng = random.Random(seed)
    rows: dict[int, tuple[str, int]] = {}
    ops: list[Op] = []
    counter = 0

    def new_row() -> tuple[int, str, int]:
        nonlocal counter
        counter += 1
        return owner * 100_000 + counter, f"w{owner}-v{counter % 7}", rng.randrange(-(2**40), 2**40)

    while len(ops) < count:
        roll = rng.random()
        if roll < 0.35 or not rows:
            identifier, det, rnd = new_row()
            if rng.random() < 0.5:
                ops.append(
                    Op(
                        "execute",
                        "INSERT INTO load VALUES (?, ?, ?, ?)",
                        [identifier, owner, det, rnd],
                    )
                )
            else:
                ops.append(
                    Op(
                        "execute",
                        f"INSERT INTO load VALUES ({identifier}, {owner}, '{det}', {rnd})",
                        None,
                    )
                )
            rows[identifier] = (det, rnd)
        elif roll < 0.47:
            identifier = rng.choice(sorted(rows))
            det, _ = rows[identifier]
            rnd = rng.randrange(-(2**40), 2**40)
            ops.append(Op("execute", "UPDATE load SET rnd = ? WHERE id = ?", [rnd, identifier]))
            rows[identifier] = (det, rnd)
        elif roll < 0.55:
            identifier = rng.choice(sorted(rows))
            det = f"w{owner}-u{rng.randrange(5)}"
            ops.append(
                Op("execute", f"UPDATE load SET det = '{det}' WHERE id = {identifier}", None)
            )
            rows[identifier] = (det, rows[identifier][1])
        elif roll < 0.63:
            identifier = rng.choice(sorted(rows))
            ops.append(Op("execute", "DELETE FROM load WHERE id = ?", [identifier]))
            del rows[identifier]
        elif roll < 0.83:
            identifier = rng.choice(sorted(rows))
            ops.append(
                Op(
                    "execute",
                    "SELECT det, rnd FROM load WHERE id = ?",
                    [identifier],
                    [rows[identifier]],
                )
            )
        elif roll < 0.93:
            det = rows[rng.choice(sorted(rows))][0]
            expected = [(i,) for i in sorted(rows) if rows[i][0] == det]
            ops.append(
                Op(
                    "execute",
                    "SELECT id FROM load WHERE det = ? AND owner = ? ORDER BY id",
                    [det, owner],
                    expected,
                )
            )
        elif roll < 0.97:
            batch = [new_row() for _ in range(5)]
            ops.append(
                Op(
                    "executemany",
                    "INSERT INTO load VALUES (?, ?, ?, ?)",
                    [(i, owner, d, r) for i, d, r in batch],
                )
            )
            rows.update({i: (d, r) for i, d, r in batch})
        else:
            batch = [new_row() for _ in range(20)]
            ops.append(Op("bulk", "load", [(i, owner, d, r) for i, d, r in batch]))
            rows.update({i: (d, r) for i, d, r in batch})
    return ops


def apply(connection: engine.Connection, cursor: Any, op: Op) -> None:
    """Run one statement and check a read's answer against the model."""
    if op.kind == "bulk":
        connection.bulk_insert(op.sql, op.parameters)
        return
    if op.kind == "executemany":
        cursor.executemany(op.sql, op.parameters)
        return
    cursor.execute(op.sql, op.parameters)
    if op.expected is not None:
        got = [tuple(row) for row in cursor.fetchall()]
        assert got == op.expected, f"a read gave another answer than the model: {op.sql}"


def _make_keys(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    build_registry(key_directory=directory).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    return directory


def _create(path: Path, keys: Path) -> None:
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        for statement in SETUP:
            connection.execute(statement)


def _state(path: Path, keys: Path, **options: Any) -> list[tuple[Any, ...]]:
    with engine.connect(str(path), key_dir=str(keys), **options) as connection:
        return [tuple(row) for row in connection.execute(STATE).fetchall()]


def _serial_replay(directory: Path, keys: Path, workloads: list[list[Op]]) -> list[tuple[Any, ...]]:
    path = directory / "replay.duckdb"
    _create(path, keys)
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        cursor = connection.cursor()
        for ops in workloads:
            for op in ops:
                apply(connection, cursor, op)
    return _state(path, keys)


def _run_threads(targets: list[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                failures.append(error)

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a worker thread is still running (deadlock?)"
    if failures:
        raise failures[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_keys(tmp_path_factory.mktemp("load-keys"))


def test_threads_sharing_one_connection_match_a_serial_replay(tmp_path: Path, keys: Path) -> None:
    path = tmp_path / "shared.duckdb"
    _create(path, keys)
    seed = random.randrange(2**32)
    workloads = [workload(owner, 200, seed + owner) for owner in range(1, 5)]
    with engine.connect(str(path), key_dir=str(keys)) as connection:

        def worker(ops: list[Op]) -> Callable[[], None]:
            def run() -> None:
                cursor = connection.cursor()  # one cursor per thread, one shared connection
                for op in ops:
                    apply(connection, cursor, op)

            return run

        _run_threads([worker(ops) for ops in workloads])
    assert _state(path, keys) == _serial_replay(tmp_path, keys, workloads), f"seed {seed}"


def test_threads_with_a_connection_each_match_a_serial_replay(tmp_path: Path, keys: Path) -> None:
    """threadsafety = 1: threads share the module; each opens its own connection to the file."""
    path = tmp_path / "each.duckdb"
    _create(path, keys)
    seed = random.randrange(2**32)
    workloads = [workload(owner, 150, seed + owner) for owner in range(1, 5)]

    def worker(ops: list[Op]) -> Callable[[], None]:
        def run() -> None:
            with engine.connect(str(path), key_dir=str(keys)) as connection:
                cursor = connection.cursor()
                for op in ops:
                    apply(connection, cursor, op)

        return run

    _run_threads([worker(ops) for ops in workloads])
    assert engine.threadsafety >= 1
    assert _state(path, keys) == _serial_replay(tmp_path, keys, workloads), f"seed {seed}"


# Processes.


def _spawn(*arguments: str) -> subprocess.Popen[str]:
    repository = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.security.test_concurrency", *arguments],
        cwd=repository,
        env={**os.environ, "PYTHONPATH": str(repository)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        out, err = process.communicate(timeout=JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("a worker process did not finish (deadlock or hang?)") from None
    assert process.returncode == 0, f"a worker process failed: {err[-3000:]}"
    return out


def _connect_when_free(path: str, keys: str, deadline: float, **options: Any) -> engine.Connection:
    """engine.connect, retried while another process holds the file's lock."""
    while True:
        try:
            return engine.connect(path, key_dir=keys, **options)
        except errors.OperationalError as error:
            if "lock" not in str(error).casefold() or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))


def process_writer(path: str, keys: str, owner: int, seed: int, count: int) -> None:
    """A writer process: its workload in chunks, each under its own connection."""
    ops = workload(owner, count, seed)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for start in range(0, len(ops), PROCESS_CHUNK):
        connection = _connect_when_free(path, keys, deadline)
        try:
            cursor = connection.cursor()
            for op in ops[start : start + PROCESS_CHUNK]:
                apply(connection, cursor, op)
        finally:
            connection.close()


def process_reader(path: str, keys: str) -> None:
    """A reader process: opens read-only and prints a digest of the whole table."""
    rows = _state(Path(path), Path(keys), read_only=True)
    print(hashlib.sha256(repr(rows).encode()).hexdigest(), len(rows))


def process_probe(path: str, keys: str) -> None:
    """Try to open the file both ways while another process holds it; print what happened."""
    outcome = {}
    for read_only in (False, True):
        try:
            engine.connect(path, key_dir=keys, read_only=read_only).close()
            outcome[str(read_only)] = "opened"
        except errors.Error as error:
            outcome[str(read_only)] = type(error).__name__
    print(json.dumps(outcome))


def test_writer_processes_take_turns_and_match_a_serial_replay(tmp_path: Path, keys: Path) -> None:
    path = tmp_path / "processes.duckdb"
    _create(path, keys)
    seed = random.randrange(2**32)
    owners, count = range(1, 4), 150
    writers = [
        _spawn("writer", str(path), str(keys), str(o), str(seed + o), str(count)) for o in owners
    ]
    for process in writers:
        _finish(process)
    workloads = [workload(owner, count, seed + owner) for owner in owners]
    final = _state(path, keys)
    assert final == _serial_replay(tmp_path, keys, workloads), f"seed {seed}"
    # Readers in several processes at once, read-only, all see the same committed state.
    readers = [_spawn("reader", str(path), str(keys)) for _ in range(2)]
    digests = {_finish(process).strip() for process in readers}
    expected = hashlib.sha256(repr(final).encode()).hexdigest()
    assert digests == {f"{expected} {len(final)}"}


def test_an_open_writer_excludes_every_other_process(tmp_path: Path, keys: Path) -> None:
    """DuckDB's file lock: while this process holds the file read-write, another process gets
    OperationalError from engine.connect, read-only or not; once it closes, both work."""
    path = tmp_path / "locked.duckdb"
    _create(path, keys)
    with engine.connect(str(path), key_dir=str(keys)):
        held = json.loads(_finish(_spawn("probe", str(path), str(keys))))
    assert held == {"False": "OperationalError", "True": "OperationalError"}
    free = json.loads(_finish(_spawn("probe", str(path), str(keys))))
    assert free == {"False": "opened", "True": "opened"}


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "writer":
        process_writer(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
    elif role == "reader":
        process_reader(rest[0], rest[1])
    elif role == "probe":
        process_probe(rest[0], rest[1])
    else:
        raise SystemExit(f"unknown role {role!r}")

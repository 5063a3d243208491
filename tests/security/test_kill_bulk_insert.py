"""kill -9 during a bulk insert: a worker process bulk-inserts batches of encrypted rows (1.5M rows
planned per run), each batch committed by ``bulk_insert`` and reported to a progress file before
and after; the test kills it with SIGKILL at a random point, three times on the same file.

After each kill the file reopens through ``engine.connect`` (DuckDB replays its WAL): every batch
reported done is there, no batch is there that was never begun, every batch present is complete,
and every cell decrypts to what was written. Run as a module, this file is the worker.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import engine
from engine.client.keystores import build_registry

BATCH_ROWS = 65_536
PLANNED_BATCHES = 24  # 1.57M rows per run, far more than a run gets through before the kill
RUNS = 3
HANG_GUARD_S = 60.0  # generous: only catches a worker or a reopen that hangs
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


def _batch(number: int) -> pa.Table:
    """The rows of batch ``number``: ids are contiguous, the encrypted values derive from them."""
    ids = pa.array(range(number * BATCH_ROWS, (number + 1) * BATCH_ROWS), pa.int64())
    return pa.table(
        {
            "id": ids,
            "batch": pa.array([number] * BATCH_ROWS, pa.int32()),
            "code": pc.cast(ids, pa.string()),
            "amount": pc.multiply(ids, 7),
        }
    )


def _report(progress: Path, line: str) -> None:
    with progress.open("a", encoding="ascii") as stream:
        stream.write(line + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def worker(database: str, key_dir: str, progress: Path, first_batch: int) -> None:
    """Insert batches from ``first_batch`` on; ``begin N`` is reported before each bulk_insert,
    ``done N`` after it returned (so the batch is committed)."""
    connection = engine.connect(database, key_dir=key_dir)
    _report(progress, "ready")
    for number in range(first_batch, first_batch + PLANNED_BATCHES):
        _report(progress, f"begin {number}")
        connection.bulk_insert("bulk", _batch(number))
        _report(progress, f"done {number}")
    connection.close()


def _lines(progress: Path) -> list[str]:
    if not progress.exists():
        return []
    return progress.read_text(encoding="ascii").splitlines()


@pytest.fixture()
def database(tmp_path: Path) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    build_registry(key_directory=keys).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    path = tmp_path / "bulk.duckdb"
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        connection.execute(
            "CREATE COLUMN MASTER KEY cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'cmk.pem')"
        )
        connection.execute(
            "CREATE COLUMN ENCRYPTION KEY cek WITH VALUES (COLUMN_MASTER_KEY = cmk, "
            "ALGORITHM = 'RSA_OAEP')"
        )
        connection.execute(
            "CREATE TABLE bulk (id BIGINT, batch INTEGER, "
            f"code VARCHAR {ENC.format('DETERMINISTIC')}, amount BIGINT {ENC.format('RANDOMIZED')})"
        )
    return path, keys


def _kill_during_insert(
    path: Path, keys: Path, progress: Path, first_batch: int, rng: random.Random
) -> None:
    """Start a worker, wait until it has begun a randomly chosen batch, wait a random moment
    more, and SIGKILL it."""
    target = first_batch + rng.randrange(1, 5)
    delay = rng.uniform(0.0, 0.2)
    repository = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.security.test_kill_bulk_insert",
            str(path),
            str(keys),
            str(progress),
            str(first_batch),
        ],
        cwd=repository,
        env={**os.environ, "PYTHONPATH": str(repository)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while f"begin {target}" not in _lines(progress):
            if process.poll() is not None:
                raise AssertionError(
                    f"the worker exited early ({process.returncode}): "
                    f"{process.stderr.read().decode(errors='replace')[-2000:]}"  # type: ignore[union-attr]
                )
            assert time.monotonic() < deadline, "the worker never reached its batch (hang?)"
            time.sleep(0.005)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=HANG_GUARD_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the worker finished before it was killed"


def _check_after_kill(path: Path, keys: Path, progress: list[Path]) -> tuple[set[int], set[int]]:
    """Reopen and check the invariants over the progress of every run so far; returns (batches
    present, batches reported done)."""
    lines = [line for report in progress for line in _lines(report)]
    begun = {int(line.split()[1]) for line in lines if line.startswith("begin ")}
    done = {int(line.split()[1]) for line in lines if line.startswith("done ")}
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        counts = dict(connection.execute("SELECT batch, count(*) FROM bulk GROUP BY batch"))
        present = set(counts)
        assert done <= present, f"committed batches lost: {sorted(done - present)}"
        assert present <= begun, f"batches that were never begun: {sorted(present - begun)}"
        partial = {b: n for b, n in counts.items() if n != BATCH_ROWS}
        assert not partial, f"half-written batches are visible: {partial}"
        # Every cell decrypts, to the value derived from its plaintext id.
        table = connection.execute("SELECT id, batch, code, amount FROM bulk").fetch_arrow_table()
        assert table.num_rows == BATCH_ROWS * len(present)
        assert pc.all(pc.equal(table["code"], pc.cast(table["id"], pa.string()))).as_py()
        assert pc.all(pc.equal(table["amount"], pc.multiply(table["id"], 7))).as_py()
        assert pc.count_distinct(table["id"]).as_py() == table.num_rows
        expected_batch = pc.cast(pc.divide(table["id"], BATCH_ROWS), pa.int32())
        assert pc.all(pc.equal(table["batch"], expected_batch)).as_py()
    return present, done


def test_kill_9_during_bulk_insert_loses_no_committed_batch(database: tuple[Path, Path]) -> None:
    path, keys = database
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    reports: list[Path] = []
    first = 0
    for run in range(RUNS):
        reports.append(path.with_name(f"progress-{run}.txt"))
        _kill_during_insert(path, keys, reports[-1], first, rng)
        present, done = _check_after_kill(path, keys, reports)
        this_run = {int(x.split()[1]) for x in _lines(reports[-1]) if x.startswith("begin ")}
        assert done & this_run, f"run {run} (seed {seed}): no batch was committed before the kill"
        # The next run starts after the last batch begun, so batch numbers never repeat.
        first = max(this_run) + 1


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))

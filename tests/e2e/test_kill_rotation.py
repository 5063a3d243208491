"""The kill test: a subprocess re-encrypts a 1M-row encrypted INTEGER column and is killed with
SIGKILL at random points. Every reopened database must be consistent: the catalog names one key
and type, every row decrypts under it (and really has that type), and the plaintext is intact.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import engine
from engine.client.codec import encrypt_column
from engine.client.keystores import build_registry
from engine.sql.tag_columns import cell_tag
from tests.support.keys import CEK1_CEK2_KEYS

ROWS = 1_000_000
BATCH_ROWS = 50_000
REPOSITORY = Path(__file__).resolve().parents[2]
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)

# The worker prints one line per rewritten batch, so the parent can kill it mid-rewrite.
WORKER = """
import sys
import engine
from engine.rotation import rotate_cek

database, key_dir, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = engine.connect(database, key_dir=key_dir)
print("started", flush=True)
rotate_cek(con, "t", "v", "cek2", encryption_type="RANDOMIZED", batch_rows=batch_rows,
           progress=lambda rows: print("batch", rows, flush=True))
print("committed", flush=True)
con.close()
print("closed", flush=True)
"""


def _expected(count: int) -> pa.Array:
    """The plaintext of row i (ids and values both follow from i)."""
    ids = pa.array(range(count), pa.int32())
    return pc.subtract(pc.multiply(ids, pa.scalar(3, pa.int32())), pa.scalar(5, pa.int32()))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("kill")
    key_dir = directory / "keys"
    key_dir.mkdir()
    build_registry(key_directory=key_dir).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    database = directory / "template.duckdb"
    with engine.connect(str(database), key_dir=str(key_dir)) as con:
        for statement in CEK1_CEK2_KEYS:
            con.execute(statement)
        con.execute(f"CREATE TABLE t (id INTEGER, v INTEGER {ENC.format('cek1', 'DETERMINISTIC')})")
        values = _expected(ROWS)
        ids = pa.array(range(ROWS), pa.int32())
        con.bulk_insert("t", pa.table({"id": ids, "v": values}), progress=False)
    return database, key_dir


def _check_consistent(database: Path, key_dir: Path) -> str:
    """Open the database and prove it consistent; return the CEK the catalog names."""
    with engine.connect(str(database), key_dir=str(key_dir)) as con:
        snapshot = con._current_snapshot()
        column = snapshot.column("t", "v")
        assert column.encryption is not None and column.declared_type == "INTEGER"
        names = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 't'"
        ).fetchall()
        tag = column.tag_column  # a deterministic column's hidden tag (docs/sql.md)
        hidden = [(tag, "BIGINT")] if tag is not None else []
        assert names == [("id", "INTEGER"), ("v", "BLOB"), *hidden]  # no shadow column left
        if tag is not None:
            # The tags were recomputed in the rotation's own transaction: all or none.
            pairs = con._host._con.execute(f'SELECT v, "{tag}" FROM t').fetchall()
            assert all(stored == cell_tag(cell) for cell, stored in pairs)
        # Decrypting every row under the catalog's key: any cell under another key raises.
        table = con.execute("SELECT id, v FROM t ORDER BY id").fetch_arrow_table()
        assert table.num_rows == ROWS
        assert table.column("v").combine_chunks().equals(_expected(ROWS))
        # The stored type is the catalog's: deterministic cells are reproducible, randomized
        # ones are not.
        key = con._client.key_lookup(snapshot)(column.encryption.cek_name)
        sample = con._host._con.execute(
            "SELECT id, v FROM t WHERE id IN (0, 123457, 999999) ORDER BY id"
        ).fetchall()
        plaintexts = [i * 3 - 5 for i, _ in sample]
        again = encrypt_column(plaintexts, key, "DETERMINISTIC", "INTEGER").to_pylist()
        same = [bytes(stored) == cell for (_, stored), cell in zip(sample, again, strict=True)]
        deterministic = column.encryption.encryption_type == "DETERMINISTIC"
        assert same == [deterministic] * len(sample)
        return column.encryption.cek_name


def _remove(database: Path) -> None:
    for leftover in database.parent.glob(database.name + "*"):  # the file and its WAL
        leftover.unlink()


def _start(database: Path, key_dir: Path) -> subprocess.Popen[str]:
    inherited = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY), inherited])))
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(database), str(key_dir), str(BATCH_ROWS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPOSITORY,
        env=env,
        text=True,
    )


def _run_and_kill(database: Path, key_dir: Path, after_batches: int | None, delay: float) -> bool:
    """Start the worker; kill it after ``after_batches`` progress lines, or ``delay`` seconds
    after it started when None. Returns whether the kill landed (the worker was running)."""
    worker = _start(database, key_dir)
    assert worker.stdout is not None
    try:
        if after_batches is None:
            assert worker.stdout.readline().strip() == "started"
            time.sleep(delay)
        else:
            batches = 0
            while batches < after_batches:
                line = worker.stdout.readline().strip()
                assert line, "the worker ended before it could be killed"
                batches += line.startswith("batch")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(60)
        worker.stdout.close()
    assert worker.returncode in (0, -signal.SIGKILL)
    return worker.returncode == -signal.SIGKILL


def test_sigkill_at_random_points_leaves_a_consistent_database(
    template: tuple[Path, Path], tmp_path: Path
) -> None:
    source, key_dir = template
    assert _check_consistent(source, key_dir) == "cek1"
    # A run left alone commits, and tells how long a whole run takes.
    database = tmp_path / "whole.duckdb"
    shutil.copyfile(source, database)
    began = time.monotonic()
    worker = _start(database, key_dir)
    assert worker.stdout is not None
    lines = worker.stdout.read().split()
    worker.wait(60)
    worker.stdout.close()
    duration = time.monotonic() - began
    assert worker.returncode == 0 and "committed" in lines
    assert _check_consistent(database, key_dir) == "cek2"
    _remove(database)

    rng = random.Random()
    batches = ROWS // BATCH_ROWS
    # Two kills land at a random batch of the rewrite, so the old state must survive; the
    # third at a random moment of a whole run, which may fall during or after the commit.
    plans: list[tuple[int | None, float]] = [
        (rng.randint(1, batches - 1), 0.0),
        (rng.randint(1, batches - 1), 0.0),
        (None, rng.uniform(0.0, duration)),
    ]
    for number, (after_batches, delay) in enumerate(plans):
        database = tmp_path / f"run{number}.duckdb"
        shutil.copyfile(source, database)
        killed = _run_and_kill(database, key_dir, after_batches, delay)
        key = _check_consistent(database, key_dir)
        if after_batches is not None:
            assert killed and key == "cek1", f"killed at batch {after_batches}, yet it committed"
        else:
            assert key in ("cek1", "cek2")
        _remove(database)  # about 70 MB each; pytest would keep them for three sessions

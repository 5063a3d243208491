"""Two processes on one database file (docs/dbapi.md, "Several processes"): DuckDB's file lock
lets one process write, or any number read with read_only=True; the loser gets OperationalError.
The second process is a real one (a child Python), since the lock is per process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import engine
from tests.support.keys import CEK1_KEYS, make_cmk

ROOT = Path(__file__).resolve().parents[2]
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)

# The child opens the file both ways and reports, per mode, the rows it read or the error class.
CHILD = textwrap.dedent(
    """
    import json, sys
    import engine
    path, key_dir = sys.argv[1], sys.argv[2]
    report = {}
    for mode in ("write", "read_only"):
        try:
            with engine.connect(path, key_dir=key_dir, read_only=mode == "read_only") as con:
                rows = con.execute("SELECT id, ssn FROM p WHERE ssn = ?", ["123-45-6789"])
                report[mode] = ["rows", [list(row) for row in rows.fetchall()]]
        except engine.Error as error:
            report[mode] = [type(error).__name__, "lock" in str(error)]
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("processes")
    make_cmk(directory)
    path = directory / "shared.duckdb"
    with engine.connect(str(path), key_dir=str(directory)) as con:
        for statement in CEK1_KEYS:
            con.execute(statement)
        con.execute(f"CREATE TABLE p (id INT, ssn CHAR(11) {ENC})")
        con.execute("INSERT INTO p VALUES (1, '123-45-6789')")
    return path, directory


def _second_process(path: Path, key_dir: Path) -> dict[str, list[object]]:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(key_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def test_while_one_process_writes_another_cannot_open_the_file(
    database: tuple[Path, Path],
) -> None:
    path, key_dir = database
    with engine.connect(str(path), key_dir=str(key_dir)):
        report = _second_process(path, key_dir)
    assert report == {"write": ["OperationalError", True], "read_only": ["OperationalError", True]}


def test_readers_share_the_file_but_keep_a_writer_out(database: tuple[Path, Path]) -> None:
    path, key_dir = database
    with engine.connect(str(path), key_dir=str(key_dir), read_only=True) as reader:
        report = _second_process(path, key_dir)
        # The reader here decrypts too: read-only needs no write to the catalog.
        assert reader.execute("SELECT ssn FROM p").fetchall() == [("123-45-6789",)]
    assert report == {
        "write": ["OperationalError", True],
        "read_only": ["rows", [[1, "123-45-6789"]]],
    }


def test_with_the_file_free_the_second_process_writes(database: tuple[Path, Path]) -> None:
    path, key_dir = database
    assert _second_process(path, key_dir)["write"] == ["rows", [[1, "123-45-6789"]]]


def test_a_read_only_connection_refuses_writes(database: tuple[Path, Path]) -> None:
    path, key_dir = database
    with engine.connect(str(path), key_dir=str(key_dir), read_only=True) as reader:
        with pytest.raises(engine.ProgrammingError, match="read-only"):
            reader.execute("INSERT INTO p VALUES (2, '000-00-0000')")

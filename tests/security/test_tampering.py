"""Tampering through a raw DuckDB connection on a closed database file, then reading through
``engine.connect``: flipped bits, truncated and extended cells, cells swapped between columns
under different keys, and CEK envelopes or key checks replaced or damaged in
``sys.column_encryption_key_values``.

Every case must raise the documented PEP 249 error (CellAuthenticationError), never crash, never
return a wrong row silently, and leave the untouched rows readable by their plaintext id. One
case decrypts on purpose: a deterministic cell swapped between two rows of the same column, the
known limit in docs/SECURITY.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import errors
from engine.client.keystores import build_registry
from engine.sql.tag_columns import cell_tag

ROWS = 12
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
TABLE = (
    "CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR, "
    f"det VARCHAR {ENC.format('cek1', 'DETERMINISTIC')}, "
    f"rnd BIGINT {ENC.format('cek1', 'RANDOMIZED')}, "
    f"other VARCHAR {ENC.format('cek2', 'DETERMINISTIC')})"
)
KEY_DDL = (
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', KEY_PATH = 'a.pem')",
    "CREATE COLUMN MASTER KEY cmk2 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', KEY_PATH = 'b.pem')",
    "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES "
    "(COLUMN_MASTER_KEY = cmk1, ALGORITHM = 'RSA_OAEP')",
    "CREATE COLUMN ENCRYPTION KEY cek2 WITH VALUES "
    "(COLUMN_MASTER_KEY = cmk1, ALGORITHM = 'RSA_OAEP')",
    "CREATE COLUMN ENCRYPTION KEY cek3 WITH VALUES "
    "(COLUMN_MASTER_KEY = cmk2, ALGORITHM = 'RSA_OAEP')",
)


def _det(i: int) -> str:
    return f"det-value-{i:02d}"


def _other(i: int) -> str:
    return f"other-value-{i:02d}"


def _rnd(i: int) -> int:
    return 1_000_000 + i


EXPECTED = {i: (f"note {i}", _det(i), _rnd(i), _other(i)) for i in range(ROWS)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A database (closed, checkpointed) and its key directory, made once; tests copy it."""
    directory = tmp_path_factory.mktemp("tamper")
    keys = directory / "keys"
    provider = build_registry(key_directory=keys).get("PEM_FILE")
    provider.generate_key("a.pem", key_size=2048)
    provider.generate_key("b.pem", key_size=2048)
    database = directory / "pristine.duckdb"
    with engine.connect(str(database), key_dir=str(keys)) as connection:
        for statement in KEY_DDL:
            connection.execute(statement)
        connection.execute(TABLE)
        connection.cursor().executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            [(i, *values) for i, values in EXPECTED.items()],
        )
    return database, keys


@pytest.fixture()
def database(pristine: tuple[Path, Path], tmp_path: Path) -> Path:
    path = tmp_path / "copy.duckdb"
    shutil.copyfile(pristine[0], path)
    return path


@pytest.fixture()
def keys(pristine: tuple[Path, Path]) -> Path:
    return pristine[1]


def _raw_cell(path: Path, column: str, row: int) -> bytes:
    with duckdb.connect(str(path)) as raw:
        (cell,) = raw.execute(f"SELECT {column} FROM t WHERE id = ?", [row]).fetchone()
    return bytes(cell)


def _write_cell(path: Path, column: str, row: int, cell: bytes) -> None:
    """What a hostile host does: overwrite one stored cell with plain DuckDB, then close. A
    deterministic column's hidden tag (docs/sql.md, "Tag columns") is a function of the cell
    the host can compute itself, so it is rewritten to match, as a careful attacker would."""
    with duckdb.connect(str(path)) as raw:
        raw.execute(f"UPDATE t SET {column} = ? WHERE id = ?", [cell, row])
        tags = raw.execute(
            "SELECT tag_column FROM sys.tag_columns WHERE table_name = 't' AND column_name = ?",
            [column],
        ).fetchall()
        for (tag,) in tags:
            raw.execute(f'UPDATE t SET "{tag}" = ? WHERE id = ?', [cell_tag(cell), row])


def _select(connection: engine.Connection, columns: str, row: int) -> tuple[object, ...]:
    return connection.execute(f"SELECT {columns} FROM t WHERE id = ?", [row]).fetchone()


def _assert_rejected_and_rest_intact(path: Path, keys: Path, column: str, row: int) -> None:
    """Reading the tampered cell raises; a scan over it raises rather than skipping it; every
    other row still reads back exactly."""
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        with pytest.raises(errors.CellAuthenticationError):
            _select(connection, column, row)
        with pytest.raises(errors.CellAuthenticationError):
            connection.execute(f"SELECT id, {column} FROM t ORDER BY id").fetchall()
        for other in (r for r in range(ROWS) if r != row):
            assert _select(connection, "note, det, rnd, other", other) == EXPECTED[other]
        # The tampered row's plaintext column is still readable; only the cell is refused.
        assert _select(connection, "note", row) == (EXPECTED[row][0],)


@pytest.mark.parametrize("column", ["det", "rnd", "other"])
def test_a_flipped_bit_in_a_stored_cell_raises(database: Path, keys: Path, column: str) -> None:
    cell = bytearray(_raw_cell(database, column, 3))
    cell[len(cell) // 2] ^= 0x10
    _write_cell(database, column, 3, bytes(cell))
    _assert_rejected_and_rest_intact(database, keys, column, 3)


@pytest.fixture(scope="module")
def shared_copy(
    pristine: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[duckdb.DuckDBPyConnection, engine.Connection]]:
    """One raw connection and one engine connection to the same file, open together (DuckDB
    shares one database between connections of one process), for the property tests."""
    path = tmp_path_factory.mktemp("tamper-shared") / "shared.duckdb"
    shutil.copyfile(pristine[0], path)
    raw = duckdb.connect(str(path))
    connection = engine.connect(str(path), key_dir=str(pristine[1]))
    yield raw, connection
    connection.close()
    raw.close()


def _tamper_and_read(
    shared: tuple[duckdb.DuckDBPyConnection, engine.Connection],
    column: str,
    row: int,
    change: bytes,
) -> None:
    raw, connection = shared
    (original,) = raw.execute(f"SELECT {column} FROM t WHERE id = ?", [row]).fetchone()
    raw.execute(f"UPDATE t SET {column} = ? WHERE id = ?", [change, row])
    try:
        with pytest.raises(errors.CellAuthenticationError) as raised:
            _select(connection, column, row)
        message = str(raised.value)
        assert _det(row) not in message and str(_rnd(row)) not in message
        assert original.hex() not in message.casefold()
        assert _select(connection, "det, rnd", (row + 1) % ROWS) == EXPECTED[(row + 1) % ROWS][1:3]
    finally:
        raw.execute(f"UPDATE t SET {column} = ? WHERE id = ?", [original, row])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    column=st.sampled_from(["det", "rnd", "other"]),
    row=st.integers(0, ROWS - 1),
    position=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_any_flipped_bit_of_any_cell_raises(
    shared_copy: tuple[duckdb.DuckDBPyConnection, engine.Connection],
    column: str,
    row: int,
    position: int,
    bit: int,
) -> None:
    raw, _connection = shared_copy
    (cell,) = raw.execute(f"SELECT {column} FROM t WHERE id = ?", [row]).fetchone()
    flipped = bytearray(cell)
    flipped[position % len(flipped)] ^= 1 << bit
    _tamper_and_read(shared_copy, column, row, bytes(flipped))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    column=st.sampled_from(["det", "rnd"]),
    row=st.integers(0, ROWS - 1),
    keep=st.integers(0, 200),
    extra=st.binary(min_size=0, max_size=32),
)
def test_any_truncated_or_extended_cell_raises(
    shared_copy: tuple[duckdb.DuckDBPyConnection, engine.Connection],
    column: str,
    row: int,
    keep: int,
    extra: bytes,
) -> None:
    raw, _connection = shared_copy
    (cell,) = raw.execute(f"SELECT {column} FROM t WHERE id = ?", [row]).fetchone()
    cell = bytes(cell)
    changed = cell[: keep % len(cell)] + extra if keep % 2 else cell + extra + b"\x00"
    if changed == cell:
        changed = cell[:-1]
    _tamper_and_read(shared_copy, column, row, changed)


def test_a_truncated_cell_on_disk_raises(database: Path, keys: Path) -> None:
    cell = _raw_cell(database, "det", 5)
    _write_cell(database, "det", 5, cell[:-16])
    _assert_rejected_and_rest_intact(database, keys, "det", 5)


def test_an_empty_cell_raises(database: Path, keys: Path) -> None:
    _write_cell(database, "rnd", 6, b"")
    _assert_rejected_and_rest_intact(database, keys, "rnd", 6)


def test_a_cell_swapped_in_from_a_column_under_another_key_raises(
    database: Path, keys: Path
) -> None:
    """det (cek1) and other (cek2) have the same type and encryption type; only the key
    differs, and the MAC under cek1 catches it."""
    _write_cell(database, "det", 4, _raw_cell(database, "other", 4))
    _assert_rejected_and_rest_intact(database, keys, "det", 4)


def test_a_deterministic_cell_swapped_between_rows_decrypts_to_the_other_row(
    database: Path, keys: Path
) -> None:
    """The documented known limit (docs/SECURITY.md, Known limits): a cell does not name its
    row, so a swap within one column under one key authenticates and decrypts."""
    first, second = _raw_cell(database, "det", 1), _raw_cell(database, "det", 2)
    _write_cell(database, "det", 1, second)
    _write_cell(database, "det", 2, first)
    with engine.connect(str(database), key_dir=str(keys)) as connection:
        assert _select(connection, "det", 1) == (_det(2),)
        assert _select(connection, "det", 2) == (_det(1),)
        # Equality lookups follow the ciphertext, so they find the swapped rows.
        assert connection.execute("SELECT id FROM t WHERE det = ?", [_det(1)]).fetchall() == [(2,)]
        for other in range(3, ROWS):
            assert _select(connection, "note, det, rnd, other", other) == EXPECTED[other]


def _envelope(path: Path, cek: str) -> bytes:
    with duckdb.connect(str(path)) as raw:
        (value,) = raw.execute(
            "SELECT v.encrypted_value FROM sys.column_encryption_key_values v "
            "JOIN sys.column_encryption_keys k USING (column_encryption_key_id) WHERE k.name = ?",
            [cek],
        ).fetchone()
    return bytes(value)


def _write_envelope(path: Path, cek: str, envelope: bytes) -> None:
    with duckdb.connect(str(path)) as raw:
        raw.execute(
            "UPDATE sys.column_encryption_key_values SET encrypted_value = ? "
            "WHERE column_encryption_key_id = (SELECT column_encryption_key_id "
            "FROM sys.column_encryption_keys WHERE name = ?)",
            [envelope, cek],
        )


def _write_key_check(path: Path, cek: str, key_check: bytes | None) -> None:
    with duckdb.connect(str(path)) as raw:
        raw.execute(
            "UPDATE sys.column_encryption_key_values SET key_check = ? "
            "WHERE column_encryption_key_id = (SELECT column_encryption_key_id "
            "FROM sys.column_encryption_keys WHERE name = ?)",
            [key_check, cek],
        )


def _key_check(path: Path, cek: str) -> bytes:
    with duckdb.connect(str(path)) as raw:
        (value,) = raw.execute(
            "SELECT v.key_check FROM sys.column_encryption_key_values v "
            "JOIN sys.column_encryption_keys k USING (column_encryption_key_id) WHERE k.name = ?",
            [cek],
        ).fetchone()
    return bytes(value)


def _assert_key_refused_and_other_key_intact(path: Path, keys: Path) -> None:
    """Every use of cek1 is refused: reading its cells, an equality lookup that only encrypts
    its parameter, and an insert (which writes nothing). Plaintext columns and cells under cek2
    still read."""
    with engine.connect(str(path), key_dir=str(keys)) as connection:
        for column in ("det", "rnd"):
            with pytest.raises(errors.CellAuthenticationError):
                _select(connection, column, 0)
        with pytest.raises(errors.CellAuthenticationError):
            connection.execute("SELECT id FROM t WHERE det = ?", [_det(0)]).fetchall()
        with pytest.raises(errors.CellAuthenticationError):
            connection.execute(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                [ROWS, "new", _det(ROWS), _rnd(ROWS), _other(ROWS)],
            )
        got = connection.execute("SELECT id, note, other FROM t ORDER BY id").fetchall()
        assert got == [(i, EXPECTED[i][0], EXPECTED[i][3]) for i in range(ROWS)]


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_an_envelope_with_flipped_bytes_is_refused(
    database: Path, keys: Path, position: str
) -> None:
    envelope = bytearray(_envelope(database, "cek1"))
    index = {"start": 0, "middle": len(envelope) // 2, "end": len(envelope) - 1}[position]
    envelope[index] ^= 0x01
    _write_envelope(database, "cek1", bytes(envelope))
    _assert_key_refused_and_other_key_intact(database, keys)


def test_an_envelope_from_a_key_under_another_cmk_is_refused(database: Path, keys: Path) -> None:
    _write_envelope(database, "cek1", _envelope(database, "cek3"))
    _assert_key_refused_and_other_key_intact(database, keys)


def test_an_envelope_from_another_key_under_the_same_cmk_is_refused(
    database: Path, keys: Path
) -> None:
    """cek2's envelope in cek1's place unwraps (same CMK) to the wrong key; cek1's key check
    (bound to its name) refuses it, so even a lookup that decrypts no cell cannot silently find
    no row, and no insert is written under the wrong key."""
    _write_envelope(database, "cek1", _envelope(database, "cek2"))
    _assert_key_refused_and_other_key_intact(database, keys)


def test_another_keys_envelope_with_its_key_check_is_refused(database: Path, keys: Path) -> None:
    """Copying cek2's check along with its envelope does not help: the check names cek2."""
    _write_envelope(database, "cek1", _envelope(database, "cek2"))
    _write_key_check(database, "cek1", _key_check(database, "cek2"))
    _assert_key_refused_and_other_key_intact(database, keys)


@pytest.mark.parametrize("damage", ["null", "flipped", "truncated"])
def test_a_missing_or_damaged_key_check_is_refused(database: Path, keys: Path, damage: str) -> None:
    check = bytearray(_key_check(database, "cek1"))
    check[0] ^= 0x01
    replacement = {"null": None, "flipped": bytes(check), "truncated": bytes(check[:16])}[damage]
    _write_key_check(database, "cek1", replacement)
    _assert_key_refused_and_other_key_intact(database, keys)


def test_a_truncated_envelope_is_refused(database: Path, keys: Path) -> None:
    _write_envelope(database, "cek1", _envelope(database, "cek1")[:100])
    _assert_key_refused_and_other_key_intact(database, keys)

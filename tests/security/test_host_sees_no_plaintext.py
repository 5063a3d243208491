"""Canary scan: plaintexts written to encrypted columns (as literals, parameters, executemany
rows and bulk inserts) never reach the host layer, its error messages, the DuckDB file or its
WAL, in UTF-8, UTF-16LE or rule-v1 normalized form."""

from __future__ import annotations

import pickle
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.client.client import Client
from engine.client.keystores import build_registry
from engine.client.normalization import normalize
from engine.connection import Connection
from engine.errors import IntegrityError
from engine.host.host import Host
from engine.host.recording import RecordingHost

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
TABLE = (
    "CREATE TABLE canary_table (id INTEGER PRIMARY KEY, note VARCHAR, "
    f"ssn VARCHAR {ENC.format('DETERMINISTIC')} UNIQUE, "
    f"name NVARCHAR(60) {ENC.format('RANDOMIZED')}, "
    f"secret_number BIGINT {ENC.format('RANDOMIZED')})"
)


def _canary(label: str) -> str:
    return f"CANARY-{label}-{secrets.token_hex(6)}"


def _forms(value: str | int, declared_type: str) -> list[bytes]:
    """Every byte form of a canary that must not appear."""
    forms = [normalize([value], declared_type).to_pylist()[0]]
    if isinstance(value, str):
        forms += [value.encode("utf-8"), value.encode("utf-16-le")]
    return forms


def _haystack(value: Any) -> bytes:
    """Everything in a recorded argument, as bytes: pickle keeps str as UTF-8 and bytes raw,
    and Arrow tables pickle with their buffers."""
    return pickle.dumps(value) + repr(value).encode("utf-8", "backslashreplace")


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Connection, RecordingHost, Path]:
    keys = tmp_path / "keys"
    build_registry(key_directory=keys).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    host = RecordingHost(Host(str(tmp_path / "canary.duckdb")))
    connection = Connection(host, Client(key_dir=str(keys)))
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem')"
    )
    connection.execute(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    connection.execute(TABLE)
    return connection, host, tmp_path / "canary.duckdb"


def test_no_canary_reaches_the_host_or_the_file(
    setup: tuple[Connection, RecordingHost, Path],
) -> None:
    connection, host, database = setup
    cursor = connection.cursor()
    canaries: list[tuple[str | int, str]] = []

    def ssn(label: str) -> str:
        value = _canary(label)
        canaries.append((value, "VARCHAR"))
        return value

    def name(label: str) -> str:
        value = _canary(label)
        canaries.append((value, "NVARCHAR(60)"))
        return value

    def number() -> int:
        value = secrets.randbits(62) | (1 << 61)
        canaries.append((value, "BIGINT"))
        return value

    cursor.execute(
        f"INSERT INTO canary_table VALUES (1, 'plain-1', '{ssn('LIT')}', '{name('LIT')}', "
        f"{number()})"
    )
    cursor.execute(
        "INSERT INTO canary_table VALUES (?, ?, ?, ?, ?)",
        [2, "plain-2", ssn("PARAM"), name("PARAM"), number()],
    )
    cursor.executemany(
        "INSERT INTO canary_table VALUES (?, ?, ?, ?, ?)",
        [(3 + i, "plain", ssn(f"MANY{i}"), name(f"MANY{i}"), number()) for i in range(3)],
    )
    connection.bulk_insert(
        "canary_table", [(10, "plain-bulk", ssn("BULKROW"), name("BULKROW"), number())]
    )
    connection.bulk_insert(
        "canary_table",
        pa.table(
            {
                "id": [11],
                "ssn": [ssn("BULKARROW")],
                "name": [name("BULKARROW")],
                "secret_number": [number()],
            }
        ),
    )
    looked_up = ssn("QUERY")
    cursor.execute(
        f"SELECT id FROM canary_table WHERE ssn = '{looked_up}' OR ssn IN (?)", [ssn("QUERYPARAM")]
    )
    cursor.execute(f"UPDATE canary_table SET name = '{name('UPDATE')}' WHERE id = 1")
    cursor.execute(f"DELETE FROM canary_table WHERE ssn = '{ssn('DELETE')}'")

    # DuckDB echoes a duplicate key in its message; the value must not leak through it.
    duplicate = canaries[0][0]
    with pytest.raises(IntegrityError) as raised:
        cursor.execute("INSERT INTO canary_table (id, ssn) VALUES (99, ?)", [duplicate])
    messages = [str(raised.value)]

    # The rows read back: the client did its job, so the scans below are meaningful.
    rows = dict(cursor.execute("SELECT id, ssn FROM canary_table").fetchall())
    assert rows[2] == canaries[3][0]

    # The plaintext CEK (the client generated it) must not reach the host either.
    snapshot = host.catalog_snapshot()
    cek = connection._client.key_lookup(snapshot)("cek1")
    assert len(cek) == 32

    wal = Path(str(database) + ".wal")
    wal_bytes = wal.read_bytes() if wal.exists() else b""
    assert len(wal_bytes) > 1000  # the inserts above are in the WAL, not yet checkpointed
    recorded = b"".join(_haystack(call.arguments) for call in host.calls)
    # Positive controls: the scans see the plaintext column and the table name.
    assert b"canary_table" in recorded and b"plain-2" in recorded
    assert b"plain-2" in wal_bytes

    connection.close()
    file_bytes = database.read_bytes()
    leaks = []
    for value, declared in canaries:
        for form in _forms(value, declared):
            for where, haystack in (
                ("host calls", recorded),
                ("error messages", "\n".join(messages).encode("utf-8")),
                ("WAL", wal_bytes),
                ("database file", file_bytes),
            ):
                if form in haystack:
                    leaks.append(f"{value!r} ({declared}) in {where}")
    for where, haystack in (("host calls", recorded), ("WAL", wal_bytes), ("file", file_bytes)):
        if cek in haystack:
            leaks.append(f"the plaintext CEK in {where}")
    assert leaks == []
    assert len(canaries) >= 20


def test_the_scan_would_see_a_leak(setup: tuple[Connection, RecordingHost, Path]) -> None:
    """A canary written to a plaintext column is found, so a leak would be."""
    connection, host, _database = setup
    leaked = _canary("PLAIN")
    connection.execute("INSERT INTO canary_table (id, note) VALUES (1, ?)", [leaked])
    recorded = b"".join(_haystack(call.arguments) for call in host.calls)
    assert leaked.encode("utf-8") in recorded
    connection.close()

"""Setup shared by the hypothesis differential tests of enclave queries: a module-wide harness
(EnclaveSQL with unattested enclave keys, plus plaintext DuckDB), tables created and filled on
both sides, and the answers compared. It must NOT decide what is queried or which values are
drawn: each test module keeps its own strategies and queries."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pytest

from engine.client.enclave_session import InsecureEnclaveWarning
from engine.client.keystores import build_registry
from tests.sql.differential import Differential, normalize_rows

# The clause that makes a column RANDOMIZED under the harness's enclave-enabled CEK.
RANDOMIZED_ENCLAVE = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_enclave, ENCRYPTION_TYPE = RANDOMIZED, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
_CMKS = ("cmk1.pem", "cmk_enclave.pem")


@contextmanager
def enclave_differential(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Differential]:
    """A Differential over fresh CMKs whose enclave session skips attestation (protocol
    'none'); its platform key lives under a temporary folder named after ``name``."""
    directory = tmp_path_factory.mktemp(name)
    keys = tmp_path_factory.mktemp(f"{name}_keys")
    provider = build_registry(key_directory=keys).get("PEM_FILE")
    for cmk in _CMKS:
        provider.generate_key(cmk, key_size=2048)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVESQL_PLATFORM_DIR", str(directory / "platform"))
        differential = Differential(
            directory, {cmk: keys / cmk for cmk in _CMKS}, attestation_protocol="none"
        )
        try:
            yield differential
        finally:
            differential.close()


def create_on_both(
    harness: Differential,
    table: str,
    columns: Sequence[tuple[str, str, bool]],
    rows: Sequence[tuple[object, ...]],
) -> None:
    """Create ``table`` from (name, type, encrypted) columns on both sides (encrypted ones
    RANDOMIZED on EnclaveSQL, plain on the oracle) and insert ``rows`` into both."""
    ours = ", ".join(
        f"{name} {type_name}{' ' + RANDOMIZED_ENCLAVE if encrypted else ''}"
        for name, type_name, encrypted in columns
    )
    theirs = ", ".join(f"{name} {type_name}" for name, type_name, _ in columns)
    harness.connection.execute(f"CREATE TABLE {table} ({ours})")
    harness.oracle.execute(f"CREATE TABLE {table} ({theirs})")
    if rows:
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in columns)})"
        harness.connection.cursor().executemany(insert, list(rows))
        harness.oracle.executemany(insert, list(rows))


def assert_same_answers(harness: Differential, queries: Iterable[tuple[str, list[object]]]) -> None:
    """Run every (sql, parameters) on both sides; rows compare in order when the SQL has
    ORDER BY, else as multisets (see tests.sql.differential.normalize_rows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureEnclaveWarning)
        for sql, values in queries:
            ours = harness.connection.execute(sql, values).fetchall()
            theirs = harness.oracle.execute(sql, values).fetchall()
            ordered = "ORDER BY" in sql
            assert normalize_rows(ours, ordered) == normalize_rows(theirs, ordered), (sql, values)

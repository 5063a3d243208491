"""Pieces shared by the end-to-end enclave query tests: the RANDOMIZED column clause under the
enclave-enabled CEK cek_e of tests.support.keys.ENCLAVE_KEYS, a connection with those keys and an
unattested session, and running a query with the unattested-session warning silenced. It must NOT
create tables or rows: each test module keeps its own data, whose shape is what it tests."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.client.enclave_session import InsecureEnclaveWarning
from engine.connection import Connection
from tests.support.keys import ENCLAVE_KEYS, make_cmk

# A column clause: RANDOMIZED encryption under cek_e (tests.support.keys.ENCLAVE_KEYS).
RANDOMIZED = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_e, ENCRYPTION_TYPE = RANDOMIZED, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


def quiet_fetchall(
    connection: Connection, sql: str, parameters: Any = None
) -> list[tuple[Any, ...]]:
    """Run ``sql`` and fetch every row, without the warning an unattested session gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureEnclaveWarning)
        return connection.execute(sql, parameters).fetchall()


@contextmanager
def enclave_connection(directory: Path, database: str = "db.duckdb") -> Iterator[Connection]:
    """A connection to ``directory``/``database`` whose enclave session skips attestation (its
    platform key under ``directory``/platform), with a fresh cmk.pem in ``directory`` and the
    ENCLAVE_KEYS created; closed afterwards."""
    make_cmk(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVESQL_PLATFORM_DIR", str(directory / "platform"))
        connection = engine.connect(
            str(directory / database), key_dir=str(directory), attestation_protocol="none"
        )
        try:
            for statement in ENCLAVE_KEYS:
                connection.execute(statement)
            yield connection
        finally:
            connection.close()

"""An attestation service that is down (connection refused) or silent (accepts, never answers)
must give an OperationalError through ``engine.connect(..., attestation_protocol="service")``
within a stated timeout, at connect or at the first statement that needs the enclave.

The AttestationClient's own behaviour is covered in tests/unit/test_attestation_client.py; this
file covers the DB-API path and skips, saying why, until engine.connect attests.
"""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import errors
from engine.client.attestation import AttestationClient
from engine.client.keystores import build_registry

# The client's documented default; a silent service must fail within it (plus the guard).
DEFAULT_TIMEOUT_S = inspect.signature(AttestationClient).parameters["timeout"].default
SHORT_TIMEOUT_S = 1.0
HANG_GUARD_S = max(30.0, 4 * DEFAULT_TIMEOUT_S)  # far beyond any timeout: catches only a hang
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek, ENCRYPTION_TYPE = RANDOMIZED, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


@pytest.fixture()
def down_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed now: connecting is refused


@pytest.fixture()
def silent_url() -> Iterator[str]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes handshakes; nobody ever answers
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _bounded(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``action`` in a thread; fail if it is still running after the hang guard."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"no answer within {HANG_GUARD_S} s: the outage hangs"
    return outcome.get("value"), outcome.get("error")


def _connect_options(url: str, key_dir: Path) -> dict[str, Any]:
    options: dict[str, Any] = {
        "attestation_protocol": "service",
        "attestation_url": url,
        "key_dir": str(key_dir),
    }
    if "attestation_timeout" in inspect.signature(engine.connect).parameters:
        options["attestation_timeout"] = SHORT_TIMEOUT_S
    return options


def _enclave_query(connection: engine.Connection) -> None:
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)"
    )
    connection.execute(
        "CREATE COLUMN ENCRYPTION KEY cek WITH VALUES (COLUMN_MASTER_KEY = cmk, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    connection.execute(f"CREATE TABLE t (id INTEGER, amount BIGINT {ENC})")
    connection.execute("INSERT INTO t VALUES (1, 10)")
    connection.execute("SELECT id FROM t WHERE amount > ?", [5]).fetchall()


@pytest.mark.parametrize("outage", ["down_url", "silent_url"])
def test_an_unreachable_attestation_service_is_an_operational_error(
    outage: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(outage)
    keys = tmp_path / "keys"
    build_registry(key_directory=keys).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    connection, error = _bounded(lambda: engine.connect(":memory:", **_connect_options(url, keys)))
    if error is None:
        try:
            _, error = _bounded(lambda: _enclave_query(connection))
            wired = connection.enclave_available
        finally:
            connection.close()
        if not isinstance(error, errors.OperationalError):
            if not wired:
                pytest.skip(
                    "engine.connect does not attest yet (enclave_available is False and the "
                    f"enclave query gave {type(error).__name__}); this test runs once it does"
                )
    assert isinstance(error, errors.OperationalError), f"got {type(error).__name__}: {error}"
    message = str(error)
    assert "attestation" in message.casefold()
    assert url.rsplit(":", 1)[1] in message, "the message should name the service it tried"

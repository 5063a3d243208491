"""A development enclave context for tests that run column changes in the enclave: an
unattested session (protocol "none", no warning) on the real native enclave, closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.client.enclave_session import EnclaveSession
from engine.host.enclave_gateway import EnclaveGateway
from engine.rotation import EnclaveContext


@contextmanager
def development_enclave(platform_dir: Path) -> Iterator[EnclaveContext]:
    """An EnclaveContext over a fresh session whose platform key lives in ``platform_dir``."""
    gateway = EnclaveGateway()
    session = EnclaveSession.establish(
        gateway, protocol="none", platform_dir=platform_dir, warn_insecure=False
    )
    try:
        yield EnclaveContext(session, gateway)
    finally:
        session.close()

"""Fixtures of the differential SQL tests: ``harness``, one EnclaveSQL-and-DuckDB pair per test
module whose enclave session skips attestation (tests.support.enclave_differential). It must NOT
create tables; a module that needs another harness defines its own fixture of that name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sql.differential import Differential
from tests.support.enclave_differential import enclave_differential


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Differential]:
    """A module-wide Differential with fresh CMKs (cmk1, cmk_enclave) and CEKs."""
    with enclave_differential(tmp_path_factory, request.path.stem) as differential:
        yield differential

"""Fixtures shared by the end-to-end tests: a key folder holding cmk.pem, the CMK file behind
tests.support.keys (CEK1_KEYS and ENCLAVE_KEYS), made once per module since RSA key generation is
slow. It must NOT open connections or create tables; a module that needs other keys defines its
own key_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.keys import make_cmk


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with cmk.pem."""
    return make_cmk(tmp_path_factory.mktemp("keys"))

"""Runs the doctest examples of the key modules, so the documented examples stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "engine.client.keystores.base",
    "engine.client.keystores.pem_file",
    "engine.client.keystores.pkcs11_uri",
    "engine.client.keystores.registry",
    "engine.client.cek_envelope",
    "engine.client.cmk_metadata",
    "engine.client.cek_cache",
    "engine.client.column_keys",
    "engine.client.key_tool",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0, f"{name} has no doctest example"
    assert results.failed == 0

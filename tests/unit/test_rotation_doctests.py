"""The doctest examples of the rotation modules run (they are the documented usage)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "engine.rotation",
    "engine.client.rotation",
    "engine.host.column_rewrite",
    "engine.sql.alter_column_encryption",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no doctest example"
    assert result.failed == 0

"""Runs the doctest examples of the shell and notebook modules, so the documented examples stay
true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "engine.repl.statements",
    "engine.repl.formatting",
    "engine.repl.options",
    "engine.repl.introspection",
    "engine.repl.commands",
    "engine.repl.completion",
    "engine.repl.shell",
    "engine.repl.app",
    "engine.jupyter",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    if name == "engine.jupyter":
        pytest.importorskip("IPython")
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0, f"{name} has no doctest example"
    assert results.failed == 0

"""The boundaries of DESIGN.md and STYLE.md, checked by walking the import statements.

- engine/host imports nothing from engine/client, and engine/client nothing from engine/host;
- engine/sql is pure: it imports neither DuckDB, the enclave, the client nor the host;
- only enclave/binding.py imports the compiled module enclave._native;
- every module opens with a docstring (what it does, what it must not do).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("engine", "enclave")


def _modules() -> list[Path]:
    return sorted(path for package in SOURCE_PACKAGES for path in (ROOT / package).rglob("*.py"))


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _violations(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _modules():
        if not _relative(path).startswith(prefix):
            continue
        for name in _imported_names(path):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                found.append(f"{_relative(path)} imports {name}")
    return found


def test_there_are_modules_to_check() -> None:
    assert len(_modules()) >= 3


@pytest.mark.parametrize(
    ("prefix", "forbidden"),
    [
        ("engine/host/", ("engine.client",)),
        ("engine/client/", ("engine.host", "duckdb")),
        ("engine/sql/", ("duckdb", "enclave", "engine.client", "engine.host")),
    ],
    ids=["host-not-client", "client-not-host-or-duckdb", "sql-is-pure"],
)
def test_layer_boundaries(prefix: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(prefix, forbidden) == []


def test_only_binding_imports_the_native_module() -> None:
    offenders = [
        _relative(path)
        for path in _modules()
        if _relative(path) != "enclave/binding.py"
        and any(name.startswith("enclave._native") for name in _imported_names(path))
    ]
    assert offenders == []


def test_the_walker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from engine.client import codec\nimport duckdb\n", encoding="utf-8")
    assert {"engine.client", "engine.client.codec", "duckdb"} <= _imported_names(sample)


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_every_module_opens_with_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring.strip()) >= 20, f"{_relative(path)} has no module docstring"

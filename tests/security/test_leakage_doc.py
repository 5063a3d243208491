"""docs/SECURITY.md stays true: its leakage table is the header's, every test it names exists,
and the leakage it documents as known limits actually holds (cells swap between rows, lengths
show to within a block, deterministic cells show equality).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from enclave.reference import decrypt_cell, encrypt_deterministic, encrypt_randomized
from tests.security.leakage_table import (
    DOC,
    HEADER,
    committed_section,
    header_functions,
    render_table,
)

ROOT = Path(__file__).resolve().parents[2]
CEK = bytes(range(1, 33))
_NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _header() -> str:
    return HEADER.read_text(encoding="utf-8")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_committed_table_matches_the_header() -> None:
    assert committed_section(_doc()) == render_table(_header()), (
        "docs/SECURITY.md's leakage table is stale; run python -m tests.security.leakage_table"
    )


def test_every_header_function_has_a_leakage_line() -> None:
    functions = header_functions(_header())
    # Counted independently of the generator's own pattern, so a declaration it missed shows.
    declared = re.findall(r"^\s*(?:EE_MUST_CHECK\s+)?ee_status\s+(ee_\w+)\(", _header(), re.M)
    assert [function.name for function in functions] == declared
    assert len(declared) >= 9
    assert [f.name for f in functions if f.leakage is None] == []


def test_a_function_without_a_leakage_line_stops_the_generator() -> None:
    header = _header()
    first = header_functions(header)[0]
    at = header.rfind("Leakage:", 0, header.index(first.name + "("))
    broken = header[:at] + "Leaks:" + header[at + len("Leakage:") :]
    with pytest.raises(ValueError, match=first.name):
        render_table(broken)


def test_a_changed_leakage_line_changes_the_table() -> None:
    header = _header()
    changed = header.replace("Leakage: none", "Leakage: everything", 1)
    assert changed != header
    assert render_table(changed) != committed_section(_doc())


def test_every_named_test_exists() -> None:
    named = _NAMED_TEST.findall(_doc())
    assert len(named) >= 20
    missing = []
    for path, function in named:
        source = ROOT / path
        if not source.is_file():
            missing.append(f"{path} (no such file)")
            continue
        tree = ast.parse(source.read_text(encoding="utf-8"))
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        if function not in defined:
            missing.append(f"{path}::{function}")
    assert not missing, f"docs/SECURITY.md names tests that do not exist: {missing}"


@pytest.mark.parametrize(
    "phrase",
    [
        "platform_key.pem",
        "can be swapped between rows of one column",
        'attestation_protocol="none"',
        "NULLs are visible",
        "The catalog is the host's, and it says which columns are encrypted",
        "Lengths are visible",
        "What simulation mode does not protect",
    ],
)
def test_the_known_limits_are_stated(phrase: str) -> None:
    assert phrase in " ".join(_doc().split()).replace("**", "")


# ---- the documented leakage holds -------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [encrypt_deterministic, encrypt_randomized])
def test_known_limit_cells_swap_between_rows_and_still_decrypt(
    encrypt: Callable[[bytes, bytes], bytes],
) -> None:
    # As in SQL Server: a cell authenticates its key, not its row. A host that swaps two cells
    # of one column gets two valid cells back, and the client reads the swapped values.
    column = [encrypt(CEK, b"alice"), encrypt(CEK, b"bob")]
    swapped = [column[1], column[0]]
    assert [decrypt_cell(CEK, cell) for cell in swapped] == [b"bob", b"alice"]


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 100])
def test_known_limit_cell_length_reveals_the_plaintext_length_within_a_block(length: int) -> None:
    cell = encrypt_randomized(CEK, b"x" * length)
    assert len(cell) == 49 + 16 * (length // 16 + 1)


def test_known_limit_deterministic_cells_reveal_equality_only() -> None:
    same = {encrypt_deterministic(CEK, b"123-45-6789") for _ in range(3)}
    assert len(same) == 1
    assert encrypt_deterministic(CEK, b"123-45-6780") not in same
    randomized = {encrypt_randomized(CEK, b"123-45-6789") for _ in range(3)}
    assert len(randomized) == 3

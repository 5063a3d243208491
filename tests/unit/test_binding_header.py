"""native/include/enclave.h keeps its promises: a Leakage: line per function, must-check
statuses, no pointers to pointers, an ABI version the binding agrees with."""

from __future__ import annotations

import re
from pathlib import Path

from enclave import binding
from enclave.build_enclave import HEADER, read_cdef

FUNCTION = re.compile(r"EE_MUST_CHECK\s+ee_status\s+(ee_\w+)\s*\(", re.MULTILINE)


def header_text() -> str:
    return Path(HEADER).read_text(encoding="utf-8")


def cdef_region() -> str:
    text = header_text()
    return text[text.index("/* EE_CDEF_BEGIN */") : text.index("/* EE_CDEF_END */")]


def test_every_function_is_must_check_and_documents_leakage() -> None:
    region = cdef_region()
    functions = FUNCTION.findall(region)
    assert len(functions) >= 9
    # Every declaration that returns a status carries the must-check macro.
    assert len(re.findall(r"^\s*(?:EE_MUST_CHECK\s+)?ee_status\s+ee_\w+\s*\(", region, re.M)) == (
        len(functions)
    )
    for name in functions:
        declaration = region.index(f"ee_status {name}(")
        comment_end = region.rindex("*/", 0, declaration)
        comment_start = region.rindex("/*", 0, comment_end)
        assert "Leakage:" in region[comment_start:comment_end], name


def test_no_pointers_to_pointers_or_callbacks() -> None:
    cdef = read_cdef()
    code = re.sub(r"/\*.*?\*/", "", cdef, flags=re.S)
    assert "**" not in code
    assert "(*" not in code


def test_abi_versions_agree() -> None:
    match = re.search(r"#define EE_ABI_VERSION (\d+)", header_text())
    assert match is not None
    assert int(match.group(1)) == binding.EXPECTED_ABI_VERSION


def test_every_header_function_is_compiled() -> None:
    for name in FUNCTION.findall(cdef_region()):
        assert callable(getattr(binding._lib, name)), name

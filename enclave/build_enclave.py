"""cffi build script: compiles native/src/*.c into the extension module `enclave._native`.

The declarations come from the marked region of native/include/enclave.h, so the header stays the
single source of truth. This module only builds; it must never be imported at run time.
"""

from __future__ import annotations

import re
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
HEADER = NATIVE / "include" / "enclave.h"
CDEF_BEGIN = "/* EE_CDEF_BEGIN */"
CDEF_END = "/* EE_CDEF_END */"


def read_cdef(header: Path = HEADER) -> str:
    """The cffi declaration: the marked region of enclave.h without the must-check macro.

    >>> "ee_cell_decrypt_batch" in read_cdef()
    True
    """
    text = header.read_text(encoding="utf-8")
    start = text.index(CDEF_BEGIN) + len(CDEF_BEGIN)
    end = text.index(CDEF_END, start)
    # cffi parses plain declarations only; the attribute macro is a C-side guard.
    return re.sub(r"\bEE_MUST_CHECK\s+", "", text[start:end])


def source_files() -> list[str]:
    """The C sources, relative to the repository root so setuptools accepts them."""
    return sorted(str(path.relative_to(ROOT)) for path in (NATIVE / "src").glob("*.c"))


ffibuilder = cffi.FFI()
ffibuilder.cdef(read_cdef())
ffibuilder.set_source(
    "enclave._native",
    '#include "enclave.h"\n',
    sources=source_files(),
    include_dirs=[str(NATIVE / "include"), str(NATIVE / "src")],
    # Per-file ISA flags are not possible here (one flag set for every source), so cell_fast.c
    # enables AES-NI and SHA-NI for itself with a target pragma.
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

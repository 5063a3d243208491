"""Describes the machine a benchmark ran on (CPU model and flags, cores, versions) for the JSON.

It only reads; it never changes settings such as the codec implementation.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

INTERESTING_FLAGS = ("aes", "sha_ni", "avx2", "avx512f", "vaes")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", "unknown"):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, flags


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def describe_machine() -> dict[str, Any]:
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in INTERESTING_FLAGS},
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "pyarrow": _version("pyarrow"),
        "cryptography": _version("cryptography"),
    }

"""Loads the public interop vectors from ../shared (never copied into the project).

The file is looked for at $ENCLAVESQL_INTEROP_VECTORS, then at ../shared/interop/ae_vectors.json
relative to the repository root. When it is absent (a user's fresh clone) the cases become one
skipped case whose reason names where it looked.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VECTORS = REPOSITORY_ROOT.parent / "shared" / "interop" / "ae_vectors.json"


def vectors_path() -> Path:
    override = os.environ.get("ENCLAVESQL_INTEROP_VECTORS")
    return Path(override) if override else DEFAULT_VECTORS


def missing_reason() -> str:
    return (
        f"interop vectors not found at {vectors_path()} "
        "(set ENCLAVESQL_INTEROP_VECTORS or place ../shared/interop/ae_vectors.json)"
    )


@cache
def load_vectors() -> tuple[dict[str, Any], ...] | None:
    path = vectors_path()
    if not path.is_file():
        return None
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def interop_cases(*kinds: str) -> list[Any]:
    """pytest parameters, one per vector of the given kinds, with the vector id as the test id.

    Use as `@pytest.mark.parametrize("vector", interop_cases("cell_decrypt"))`. When the file is
    missing there is a single skipped case; when the file has no vector of these kinds collection
    fails, so a renamed kind cannot silently turn a test into a no-op.
    """
    vectors = load_vectors()
    if vectors is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=missing_reason()), id="absent")]
    selected = [vector for vector in vectors if vector["kind"] in kinds]
    if not selected:
        raise LookupError(f"{vectors_path()} holds no vector of kind {kinds}")
    return [pytest.param(vector, id=vector["id"]) for vector in selected]

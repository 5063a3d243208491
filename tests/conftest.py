"""Shared pytest fixtures: the public interop vectors, read from ../shared, never copied in.

The vectors file is looked for at $ENCLAVESQL_INTEROP_VECTORS, then at
../shared/interop/ae_vectors.json relative to the repository root. When it is absent (a user's
fresh clone), every test that asks for it skips and names both places it looked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VECTORS = REPOSITORY_ROOT.parent / "shared" / "interop" / "ae_vectors.json"


def _vectors_path() -> Path:
    override = os.environ.get("ENCLAVESQL_INTEROP_VECTORS")
    return Path(override) if override else DEFAULT_VECTORS


@pytest.fixture(scope="session")
def ae_vectors() -> list[dict[str, Any]]:
    """Every interop vector, as the list of JSON objects in the shared file."""
    path = _vectors_path()
    if not path.is_file():
        pytest.skip(
            f"interop vectors not found at {path} "
            "(set ENCLAVESQL_INTEROP_VECTORS or place ../shared/interop/ae_vectors.json)"
        )
    vectors: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return vectors


def vectors_of_kind(vectors: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    """The vectors whose `kind` is one of `kinds`; fails loudly when there are none, so a renamed
    kind cannot turn a test into a no-op."""
    selected = [vector for vector in vectors if vector["kind"] in kinds]
    assert selected, f"no interop vectors of kind {kinds}"
    return selected

"""Shared pytest fixtures. The interop vectors come from tests/support/vectors.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.vectors import load_vectors, missing_reason


@pytest.fixture(scope="session")
def ae_vectors() -> tuple[dict[str, Any], ...]:
    """Every interop vector; skips with the looked-for paths when the file is absent."""
    vectors = load_vectors()
    if vectors is None:
        pytest.skip(missing_reason())
    return vectors

"""A target that crashes on purpose, so the runner's crash handling has a test that can fail.

It raises on any input that starts with b"crash" (one of its seeds does). It is not a default
target: only `--target selftest_crash` runs it, and it must never guard real code.
"""

from __future__ import annotations

from collections.abc import Iterable


class DeliberateCrash(RuntimeError):
    """The exception this target raises; the runner must report it as a crash."""


def seeds() -> Iterable[bytes]:
    return [b"harmless", b"crash on purpose"]


def test_one_input(data: bytes) -> None:
    """Raise DeliberateCrash for inputs starting with b"crash", else do nothing.

    >>> test_one_input(b"fine")
    """
    if data.startswith(b"crash"):
        raise DeliberateCrash("the runner must report this input as a crash")

"""Fuzz target: the native cell codec's `decrypt_cells` (ee_cell_decrypt_batch) on fuzzed Arrow
batches of valid, mutated, cut and random cells.

The target itself lives in tests/unit/test_codec_fuzz.py, where hypothesis also drives it; this
module only registers it with the runner and must not grow a second copy of its logic.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.unit.test_codec_fuzz import decrypt_target as test_one_input

__all__ = ["seeds", "test_one_input"]


def seeds() -> Iterable[bytes]:
    # decode_batch's format: a count byte, then per cell a control byte and its payload.
    return [b"\x03\x01\x00\x00\x00\x00\x00\x02\x41\x03", b"\x01\x05" + bytes(4), b"\x02\x0c\x01"]

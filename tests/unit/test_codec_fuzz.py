"""Bounded fuzzing of enclave.binding.decrypt_cells with malformed batches.

Hypothesis drives it inside the suite; the same target also runs under atheris, briefly in a
subprocess here (atheris ends its process when done) and for longer from the command line:
    python tests/unit/test_codec_fuzz.py -max_total_time=300
The only acceptable outcomes are success or CellAuthenticationError, never a crash; and success
is acceptable only when every cell decrypts to a plaintext we actually encrypted.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave import binding
from engine.errors import CellAuthenticationError

ROOT = bytes(range(32))
PLAINTEXTS = [b"", b"12345678", b"x" * 15, b"y" * 16, b"z" * 31, b"w" * 47, b"v" * 100]


def _valid_cells() -> list[bytes]:
    with binding.CellKey(ROOT) as key:
        return binding.encrypt_cells(key, pa.array(PLAINTEXTS), deterministic=False).to_pylist()


VALID_CELLS = _valid_cells()
KNOWN = set(PLAINTEXTS)


def decode_batch(data: bytes) -> tuple[list[bytes | None], int]:
    """Turns fuzz bytes into a list of cells (some valid, some mutated, some garbage, some null)
    and a slice offset."""
    cells: list[bytes | None] = []
    at = 1
    count = data[0] % 9 if data else 0
    for _ in range(count):
        if at >= len(data):
            break
        control = data[at]
        at += 1
        kind = control % 4
        if kind == 0:
            cells.append(None)
        elif kind == 1:  # a valid cell, possibly with bytes XORed in at some position
            base = bytearray(VALID_CELLS[(control >> 2) % len(VALID_CELLS)])
            patch = data[at : at + 4]
            at += 4
            if patch:
                position = patch[0] % len(base)
                for offset, value in enumerate(patch[1:]):
                    base[(position + offset) % len(base)] ^= value
            cells.append(bytes(base))
        elif kind == 2:  # a valid cell cut or extended to a fuzzed length
            base = VALID_CELLS[(control >> 2) % len(VALID_CELLS)]
            length = data[at] if at < len(data) else 0
            at += 1
            cells.append((base + base)[:length])
        else:  # raw bytes of a fuzzed length
            length = control >> 2
            cells.append(bytes(data[at : at + length]))
            at += length
    slice_start = data[-1] % 3 if data else 0
    return cells, slice_start


def decrypt_target(data: bytes) -> None:
    cells, slice_start = decode_batch(data)
    array = pa.array([None] * slice_start + cells, pa.binary())[slice_start:]
    with binding.CellKey(ROOT) as key:
        try:
            result = binding.decrypt_cells(key, array)
        except CellAuthenticationError as error:
            assert str(error) == CellAuthenticationError.MESSAGE
            return
    # Success means no cell was forged: each one decrypts to a plaintext we encrypted.
    for value, cell in zip(result.to_pylist(), cells, strict=True):
        assert (value is None) == (cell is None)
        assert value is None or value in KNOWN


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_decrypt_never_crashes(data: bytes) -> None:
    decrypt_target(data)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_bounded_atheris_run() -> None:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, __file__, "-max_total_time=3", "-seed=1"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def main() -> None:
    import atheris

    # Coverage feedback from the decoder only: instrumenting every loaded module takes minutes.
    atheris.Setup(sys.argv, atheris.instrument_func(decrypt_target))
    atheris.instrument_func(decode_batch)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

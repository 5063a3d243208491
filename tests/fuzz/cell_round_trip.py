"""Fuzz target: the rest of enclave.h's codec part through enclave.binding: key derivation, load
and free, codec selection, and ee_cell_encrypt_batch in every mode, on fuzzed keys, rows and IVs.

Only `engine.Error` may escape; what encrypts must decrypt to the same rows, be stable when
deterministic, and fail authentication under another key. It must not parse cells itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import atheris
import pyarrow as pa

import engine
from enclave import binding
from engine.errors import CellAuthenticationError, InterfaceError

IMPLEMENTATIONS = ("portable", "fast", "auto")
OTHER_KEY = bytes(range(100, 132))


def seeds() -> Iterable[bytes]:
    return [bytes(64), bytes(range(200)), b"\xff" * 120, bytes(range(7, 250, 3))]


def test_one_input(data: bytes) -> None:
    """Encrypt fuzzed rows, then check the round trip; only engine.Error may escape.

    >>> test_one_input(bytes(range(100)))
    """
    provider = atheris.FuzzedDataProvider(data)
    try:
        binding.use_codec_implementation(IMPLEMENTATIONS[provider.ConsumeIntInRange(0, 2)])
    except engine.NotSupportedError:
        pass  # "fast" on a CPU without AES-NI and SHA-NI; the portable codec stays selected
    assert binding.codec_implementation() in ("openssl", "aesni-shani")
    root = provider.ConsumeBytes(32 if provider.ConsumeIntInRange(0, 15) else 31)
    mode = provider.ConsumeIntInRange(0, 2)  # deterministic, randomized, given IVs
    rows = [
        None
        if provider.ConsumeIntInRange(0, 5) == 0
        else provider.ConsumeBytes(provider.ConsumeIntInRange(0, 70))
        for _ in range(provider.ConsumeIntInRange(0, 12))
    ]
    leading = provider.ConsumeIntInRange(0, 3)
    large = provider.ConsumeBool()
    plaintexts = pa.array([b"x"] * leading + rows, pa.large_binary() if large else pa.binary())
    plaintexts = plaintexts[leading:]
    valid = sum(row is not None for row in rows)
    iv_len = 16 * valid if provider.ConsumeIntInRange(0, 7) else provider.ConsumeIntInRange(0, 40)
    ivs = provider.ConsumeBytes(iv_len).ljust(iv_len, b"\x00")
    try:
        keys = binding.derive_cell_keys(root)
        key = binding.CellKey(root)
    except engine.Error:
        return  # a root key of the wrong length: ProgrammingError, as documented
    assert [len(part) for part in keys] == [32, 32, 32]
    with key:
        try:
            if mode == 2:
                cells = binding.encrypt_cells_with_ivs(key, plaintexts, ivs)
            else:
                cells = binding.encrypt_cells(key, plaintexts, deterministic=mode == 0)
        except engine.Error:
            return  # the wrong number of IVs: ProgrammingError, as documented
        # From here on nothing may fail: the batch was accepted, so it must round-trip.
        assert binding.decrypt_cells(key, cells).to_pylist() == rows
        if mode == 0:
            again = binding.encrypt_cells(key, plaintexts, deterministic=True)
            assert again.to_pylist() == cells.to_pylist()
    try:
        binding.decrypt_cells(key, cells)
        raise AssertionError("a closed key still decrypted")
    except InterfaceError:
        pass
    if valid:
        with binding.CellKey(OTHER_KEY) as other:
            try:
                binding.decrypt_cells(other, cells)
                raise AssertionError("cells decrypted under another key")
            except CellAuthenticationError:
                pass

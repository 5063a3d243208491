"""The public AE cell vectors through the native codec, once per implementation (fast, portable)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from enclave import binding
from engine.errors import NotSupportedError
from tests.support.vectors import interop_cases


def field(vector: dict[str, Any], name: str) -> bytes | None:
    """A hex field as bytes; absent fields appear as a missing key, null, or the string 'None'."""
    value = vector.get(name)
    if value is None or value == "None" or value == "":
        return None
    return bytes.fromhex(value)


@pytest.fixture(params=["fast", "portable"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    try:
        binding.use_codec_implementation(request.param)
    except NotSupportedError:
        pytest.skip("this CPU lacks AES-NI or SHA-NI; the fast codec cannot run here")
    yield request.param
    binding.use_codec_implementation("auto")


@pytest.mark.parametrize("vector", interop_cases("cell_encrypt_deterministic"))
def test_deterministic_encrypt_reproduces_cell(vector: dict[str, Any], implementation: str) -> None:
    key_bytes, plaintext, cell = (
        field(vector, "key_hex"),
        field(vector, "plaintext_hex"),
        field(vector, "ciphertext_hex"),
    )
    assert key_bytes is not None and plaintext is not None and cell is not None
    with binding.CellKey(key_bytes) as key:
        cells = binding.encrypt_cells(key, pa.array([plaintext], pa.binary()), deterministic=True)
        assert cells[0].as_py() == cell
        assert binding.decrypt_cells(key, cells).to_pylist() == [plaintext]


@pytest.mark.parametrize("vector", interop_cases("cell_decrypt", "cell_encrypt_with_fixed_iv"))
def test_randomized_cell_decrypts_and_reencrypts(
    vector: dict[str, Any], implementation: str
) -> None:
    key_bytes, plaintext, cell = (
        field(vector, "key_hex"),
        field(vector, "plaintext_hex"),
        field(vector, "ciphertext_hex"),
    )
    assert key_bytes is not None and plaintext is not None and cell is not None
    # Where the vector names no IV, the cell's own IV field (bytes 33..49) is the IV.
    iv = field(vector, "iv_hex") or cell[33:49]
    with binding.CellKey(key_bytes) as key:
        decrypted = binding.decrypt_cells(key, pa.array([cell], pa.binary()))
        assert decrypted.to_pylist() == [plaintext]
        again = binding.encrypt_cells_with_ivs(key, pa.array([plaintext], pa.binary()), iv)
        assert again[0].as_py() == cell


def with_derived_keys(cases: list[Any]) -> list[Any]:
    """Only the cases whose vector lists derived keys (the absent-file case passes through)."""
    return [case for case in cases if case.values[0] is None or "enc_key_hex" in case.values[0]]


@pytest.mark.parametrize(
    "vector",
    with_derived_keys(
        interop_cases(
            "key_derivation",
            "cell_encrypt_deterministic",
            "cell_decrypt",
            "cell_encrypt_with_fixed_iv",
        )
    ),
)
def test_key_derivation(vector: dict[str, Any]) -> None:
    key_bytes = field(vector, "key_hex")
    assert key_bytes is not None
    expected = (
        field(vector, "enc_key_hex"),
        field(vector, "mac_key_hex"),
        field(vector, "iv_key_hex"),
    )
    assert expected[0] is not None and expected[1] is not None
    derived = binding.derive_cell_keys(key_bytes)
    assert derived[0] == expected[0]
    assert derived[1] == expected[1]
    # Randomized vectors list no IV key ('None'): nothing to compare there.
    if expected[2] is not None:
        assert derived[2] == expected[2]

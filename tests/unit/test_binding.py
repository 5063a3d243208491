"""enclave.binding: the native cell codec through its Python contract, checked against
enclave/reference.py (pyca/cryptography) and across the fast and portable implementations."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave import binding, reference
from engine.errors import (
    CellAuthenticationError,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)

ROOT = bytes(range(32))
OTHER_ROOT = bytes(range(100, 132))

values = st.binary(min_size=0, max_size=80)
rows = st.lists(st.none() | values, max_size=40)


def fast_available() -> bool:
    before = binding.codec_implementation()
    try:
        binding.use_codec_implementation("fast")
    except NotSupportedError:
        return False
    binding.use_codec_implementation("fast" if before == "aesni-shani" else "portable")
    return True


IMPLEMENTATIONS = ["portable"] + (["fast"] if fast_available() else [])


@pytest.fixture
def key() -> Iterator[binding.CellKey]:
    with binding.CellKey(ROOT) as loaded:
        yield loaded


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    binding.use_codec_implementation(request.param)
    yield request.param
    binding.use_codec_implementation("auto")


def with_impl(name: str) -> None:
    binding.use_codec_implementation(name)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=rows, deterministic=st.booleans(), large=st.booleans())
def test_round_trip(
    key: binding.CellKey,
    implementation: str,
    data: list[bytes | None],
    deterministic: bool,
    large: bool,
) -> None:
    plaintexts = pa.array(data, pa.large_binary() if large else pa.binary())
    cells = binding.encrypt_cells(key, plaintexts, deterministic=deterministic)
    assert cells.type == pa.binary()
    assert cells.null_count == plaintexts.null_count
    assert binding.decrypt_cells(key, cells).to_pylist() == data


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=rows, start=st.integers(0, 40), stop=st.integers(0, 40))
def test_sliced_arrays(
    key: binding.CellKey, implementation: str, data: list[bytes | None], start: int, stop: int
) -> None:
    plaintexts = pa.array(data, pa.binary())[start:stop]
    cells = binding.encrypt_cells(key, plaintexts, deterministic=True)
    assert (
        cells.to_pylist()
        == binding.encrypt_cells(
            key, pa.array(plaintexts.to_pylist(), pa.binary()), deterministic=True
        ).to_pylist()
    )
    # Slice the cells too, so decryption also sees a nonzero array offset.
    middle = cells[1:]
    assert binding.decrypt_cells(key, middle).to_pylist() == plaintexts.to_pylist()[1:]
    large = pa.array(data, pa.large_binary())[start:stop]
    assert binding.decrypt_cells(
        key, binding.encrypt_cells(key, large, deterministic=False)
    ).to_pylist() == (large.to_pylist())


@pytest.mark.parametrize("count", [0, 1, 2, 2049])
def test_batch_sizes(key: binding.CellKey, implementation: str, count: int) -> None:
    data = [bytes([i % 251]) * (i % 37) if i % 7 else None for i in range(count)]
    plaintexts = pa.array(data, pa.binary())
    for deterministic in (True, False):
        cells = binding.encrypt_cells(key, plaintexts, deterministic=deterministic)
        assert len(cells) == count
        assert binding.decrypt_cells(key, cells).to_pylist() == data


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.sampled_from([b"", b"a", b"b", b"x" * 16, b"x" * 17, b"y" * 40]), max_size=30)
)
def test_deterministic_cells_equal_iff_plaintexts_equal(
    key: binding.CellKey, data: list[bytes]
) -> None:
    cells = binding.encrypt_cells(key, pa.array(data, pa.binary()), deterministic=True).to_pylist()
    for i in range(len(data)):
        for j in range(len(data)):
            assert (cells[i] == cells[j]) == (data[i] == data[j])


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plaintext=values, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_raises(
    key: binding.CellKey, implementation: str, plaintext: bytes, position: int, bit: int
) -> None:
    cell = bytearray(
        binding.encrypt_cells(key, pa.array([plaintext]), deterministic=False)[0].as_py()
    )
    cell[position % len(cell)] ^= 1 << bit
    with pytest.raises(CellAuthenticationError) as raised:
        binding.decrypt_cells(key, pa.array([bytes(cell)], pa.binary()))
    assert str(raised.value) == CellAuthenticationError.MESSAGE


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plaintext=values, cut=st.integers(min_value=1, max_value=200))
def test_truncation_raises(
    key: binding.CellKey, implementation: str, plaintext: bytes, cut: int
) -> None:
    cell = binding.encrypt_cells(key, pa.array([plaintext]), deterministic=True)[0].as_py()
    truncated = cell[: max(0, len(cell) - cut)]
    with pytest.raises(CellAuthenticationError):
        binding.decrypt_cells(key, pa.array([b"ok", truncated], pa.binary())[1:])


def test_wrong_key_and_version_raise(key: binding.CellKey, implementation: str) -> None:
    cells = binding.encrypt_cells(key, pa.array([b"secret", b"other"]), deterministic=True)
    with binding.CellKey(OTHER_ROOT) as other:
        with pytest.raises(CellAuthenticationError):
            binding.decrypt_cells(other, cells)
    bad = bytearray(cells[1].as_py())
    bad[0] = 0x02
    with pytest.raises(CellAuthenticationError) as raised:
        binding.decrypt_cells(key, pa.array([cells[0].as_py(), bytes(bad)]))
    # One fixed message: no row index, no bytes.
    assert str(raised.value) == CellAuthenticationError.MESSAGE


@pytest.mark.skipif("fast" not in IMPLEMENTATIONS, reason="this CPU lacks AES-NI or SHA-NI")
@settings(max_examples=40, deadline=None)
@given(data=rows, iv_seed=st.binary(min_size=16, max_size=16))
def test_fast_and_portable_produce_identical_cells(
    data: list[bytes | None], iv_seed: bytes
) -> None:
    plaintexts = pa.array(data, pa.binary())
    valid = sum(value is not None for value in data)
    ivs = bytes(b ^ (i % 256) for i in range(valid) for b in iv_seed)
    outputs = []
    with binding.CellKey(ROOT) as key:
        try:
            for name in ("fast", "portable"):
                with_impl(name)
                outputs.append(
                    (
                        binding.encrypt_cells(key, plaintexts, deterministic=True).to_pylist(),
                        binding.encrypt_cells_with_ivs(key, plaintexts, ivs).to_pylist(),
                    )
                )
        finally:
            with_impl("auto")
    assert outputs[0] == outputs[1]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(values, max_size=12), iv=st.binary(min_size=16, max_size=16))
def test_agrees_with_reference(
    key: binding.CellKey, implementation: str, data: list[bytes], iv: bytes
) -> None:
    oracle = reference.ReferenceCodec(ROOT)
    plaintexts = pa.array(data, pa.binary())
    deterministic = binding.encrypt_cells(key, plaintexts, deterministic=True).to_pylist()
    assert deterministic == [reference.encrypt_deterministic(ROOT, value) for value in data]
    fixed = binding.encrypt_cells_with_ivs(key, plaintexts, iv * len(data)).to_pylist()
    assert fixed == [oracle.encrypt(value, iv) for value in data]
    randomized = binding.encrypt_cells(key, plaintexts, deterministic=False).to_pylist()
    assert [oracle.decrypt(cell) for cell in randomized] == data


def test_derive_cell_keys_matches_reference() -> None:
    assert binding.derive_cell_keys(ROOT) == reference.derive_keys(ROOT)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), bytes(64)])
def test_key_of_wrong_length(bad: bytes) -> None:
    with pytest.raises(ProgrammingError, match="32 bytes"):
        binding.CellKey(bad)
    with pytest.raises(ProgrammingError, match="32 bytes"):
        binding.derive_cell_keys(bad)


def test_key_of_wrong_type() -> None:
    with pytest.raises(ProgrammingError):
        binding.CellKey("0" * 32)  # type: ignore[arg-type]


def test_closed_key_raises() -> None:
    key = binding.CellKey(ROOT)
    cells = binding.encrypt_cells(key, pa.array([b"a"]), deterministic=True)
    key.close()
    key.close()  # idempotent
    assert key.closed
    with pytest.raises(InterfaceError, match="closed"):
        binding.decrypt_cells(key, cells)
    with pytest.raises(InterfaceError, match="closed"):
        binding.encrypt_cells(key, pa.array([b"a"]), deterministic=False)


def test_wrong_input_types(key: binding.CellKey) -> None:
    with pytest.raises(ProgrammingError, match="binary"):
        binding.encrypt_cells(key, pa.array(["text"]), deterministic=True)
    with pytest.raises(ProgrammingError, match="binary"):
        binding.decrypt_cells(key, [b"not an arrow array"])
    with pytest.raises(ProgrammingError, match="16 bytes per non-null row"):
        binding.encrypt_cells_with_ivs(key, pa.array([b"a", None, b"b"]), bytes(16))


def test_chunked_input(key: binding.CellKey) -> None:
    chunked = pa.chunked_array([[b"a", None], [b"bc"]], pa.binary())
    cells = binding.encrypt_cells(key, chunked, deterministic=True)
    assert binding.decrypt_cells(key, cells).to_pylist() == [b"a", None, b"bc"]


def test_implementation_names() -> None:
    try:
        binding.use_codec_implementation("portable")
        assert binding.codec_implementation() == "openssl"
        if "fast" in IMPLEMENTATIONS:
            binding.use_codec_implementation("fast")
            assert binding.codec_implementation() == "aesni-shani"
        with pytest.raises(ProgrammingError, match="unknown codec"):
            binding.use_codec_implementation("quick")
    finally:
        binding.use_codec_implementation("auto")


def test_messages_carry_no_key_bytes() -> None:
    secret = bytes(range(7, 39))
    with pytest.raises(ProgrammingError) as raised:
        binding.CellKey(secret[:31])
    assert secret[:8].hex() not in str(raised.value)
    assert repr(binding.CellKey(secret)) == "<CellKey open>"


def test_outputs_past_the_int32_limit_become_large_binary(
    key: binding.CellKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lowering the limit exercises the >2 GiB branches without allocating 2 GiB.
    data = [b"a" * 20, None, b"b"]
    plaintexts = pa.array(data, pa.binary())
    monkeypatch.setattr(binding, "_INT32_MAX", 100)
    cells = binding.encrypt_cells(key, plaintexts, deterministic=True)
    assert cells.type == pa.large_binary()
    with pytest.raises(NotSupportedError, match="split it into batches"):
        binding.decrypt_cells(key, cells)
    monkeypatch.undo()
    assert binding.decrypt_cells(key, cells).to_pylist() == data
    assert (
        cells.to_pylist() == binding.encrypt_cells(key, plaintexts, deterministic=True).to_pylist()
    )


def test_concurrent_use_and_close() -> None:
    # Batches run without the GIL; a key closed by another thread must fail cleanly, never crash.
    plaintexts = pa.array([bytes([i % 256]) * (i % 50) for i in range(3000)], pa.binary())
    errors: list[BaseException] = []

    def work(key: binding.CellKey) -> None:
        try:
            for _ in range(20):
                cells = binding.encrypt_cells(key, plaintexts, deterministic=False)
                assert binding.decrypt_cells(key, cells).equals(plaintexts)
        except InterfaceError:
            pass  # the key was closed underneath us: the documented outcome
        except BaseException as error:  # reported below, from the main thread
            errors.append(error)

    keys = [binding.CellKey(ROOT) for _ in range(3)]
    threads = [threading.Thread(target=work, args=(keys[i % 3],)) for i in range(6)]
    for thread in threads:
        thread.start()
    keys[0].close()
    for thread in threads:
        thread.join()
    for loaded in keys:
        loaded.close()
    assert errors == []


def test_environment_forces_portable() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from enclave import binding; print(binding.codec_implementation())",
        ],
        cwd=root,
        env=dict(os.environ, ENCLAVESQL_CODEC="portable", PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "openssl"


def test_doctests() -> None:
    result = doctest.testmod(binding)
    assert result.failed == 0 and result.attempted > 0

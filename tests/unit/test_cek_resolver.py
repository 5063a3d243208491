"""The column key resolver: trusted key paths, caching, CMK rotation and the enclave rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.client.cek_cache import CekCache
from engine.client.cmk_metadata import MetadataSignatureError
from engine.client.column_keys import ColumnKeyResolver
from engine.client.keystores import PemFileProvider, build_registry
from engine.errors import CellAuthenticationError, OperationalError

CEK = bytes(range(100, 132))


class CountingPemProvider(PemFileProvider):
    """Counts every key store access (loading a key), to show when none happened."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.accesses = 0

    def _private_key(self, key_path: str):  # type: ignore[no-untyped-def]
        self.accesses += 1
        return super()._private_key(key_path)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("resolver-keys")
    provider = PemFileProvider(directory)
    provider.generate_key("old.pem", key_size=2048)
    provider.generate_key("new.pem", key_size=2048)
    return directory


@pytest.fixture
def store(key_dir: Path) -> CountingPemProvider:
    return CountingPemProvider(key_dir)


def _resolver(store: CountingPemProvider, **kwargs) -> ColumnKeyResolver:  # type: ignore[no-untyped-def]
    registry = build_registry({"COUNTING": store}, key_directory=store.resolve("."))
    return ColumnKeyResolver(registry, CekCache(), **kwargs)


def test_cek_for_unwraps_and_caches(store: CountingPemProvider) -> None:
    envelope = store.wrap_cek("old.pem", CEK)
    resolver = _resolver(store)
    store.accesses = 0
    assert resolver.cek_for("counting", "old.pem", envelope) == CEK
    used = store.accesses
    assert used > 0
    assert resolver.cek_for("COUNTING", "old.pem", envelope) == CEK
    assert store.accesses == used  # served from the cache


def test_untrusted_key_path_is_refused_before_any_key_store_access(
    store: CountingPemProvider,
) -> None:
    envelope = store.wrap_cek("old.pem", CEK)
    resolver = _resolver(store, trusted_key_paths={"new.pem"})
    store.accesses = 0
    with pytest.raises(OperationalError) as caught:
        resolver.cek_for("COUNTING", "old.pem", envelope, cmk_name="CMK_OLD")
    assert store.accesses == 0
    message = str(caught.value)
    assert "old.pem" in message and "CMK_OLD" in message and "trusted_key_paths" in message
    assert envelope.hex() not in message


def test_trusted_key_paths_compare_case_insensitively(store: CountingPemProvider) -> None:
    envelope = store.wrap_cek("old.pem", CEK)
    resolver = _resolver(store, trusted_key_paths=["OLD.PEM"])
    assert resolver.cek_for("COUNTING", "old.pem", envelope) == CEK


def test_untrusted_pkcs11_path_message_hides_the_pin(store: CountingPemProvider) -> None:
    resolver = _resolver(store, trusted_key_paths=set())
    path = "pkcs11:token=t;object=o?pin-value=secret-pin-1234"
    with pytest.raises(OperationalError) as caught:
        resolver.cek_for("PKCS11", path, b"envelope")
    assert "secret-pin-1234" not in str(caught.value)


def test_unknown_provider_lists_the_registered_ones(store: CountingPemProvider) -> None:
    with pytest.raises(OperationalError) as caught:
        _resolver(store).cek_for("AZURE_KEY_VAULT", "https://vault/keys/k", b"envelope")
    message = str(caught.value)
    assert "AZURE_KEY_VAULT" in message
    assert "COUNTING" in message and "PEM_FILE" in message and "PKCS11" in message


def test_failures_are_not_cached(store: CountingPemProvider) -> None:
    envelope = bytearray(store.wrap_cek("old.pem", CEK))
    envelope[-1] ^= 1
    resolver = _resolver(store)
    for _ in range(2):
        with pytest.raises(CellAuthenticationError):
            resolver.cek_for("COUNTING", "old.pem", bytes(envelope))


def test_rotation_uses_the_first_value_that_works(store: CountingPemProvider) -> None:
    old = store.wrap_cek("old.pem", CEK)
    new = store.wrap_cek("new.pem", CEK)
    resolver = _resolver(store, trusted_key_paths={"new.pem"})
    # The old CMK is no longer trusted, so its value is skipped and the new one used.
    values = [("COUNTING", "old.pem", old), ("COUNTING", "new.pem", new)]
    assert resolver.cek_for_any(values) == CEK


def test_rotation_skips_an_unreachable_store(store: CountingPemProvider) -> None:
    new = store.wrap_cek("new.pem", CEK)
    values = [("COUNTING", "missing.pem", new), ("COUNTING", "new.pem", new)]
    assert _resolver(store).cek_for_any(values) == CEK


def test_rotation_all_unreachable_lists_each_reason(store: CountingPemProvider) -> None:
    envelope = store.wrap_cek("new.pem", CEK)  # well formed, so the key store is consulted
    values = [("COUNTING", "gone-1.pem", envelope), ("NOPE", "gone-2.pem", envelope)]
    with pytest.raises(OperationalError) as caught:
        _resolver(store).cek_for_any(values)
    message = str(caught.value)
    assert "value 1" in message and "gone-1.pem" in message
    assert "value 2" in message and "NOPE" in message


def test_rotation_prefers_the_authentication_error(store: CountingPemProvider) -> None:
    tampered = bytearray(store.wrap_cek("new.pem", CEK))
    tampered[-5] ^= 1
    values = [("COUNTING", "gone.pem", bytes(tampered)), ("COUNTING", "new.pem", bytes(tampered))]
    with pytest.raises(CellAuthenticationError):
        _resolver(store).cek_for_any(values)


def test_rotation_with_no_values_is_an_error(store: CountingPemProvider) -> None:
    with pytest.raises(OperationalError):
        _resolver(store).cek_for_any([])


def test_enclave_cmk_with_a_valid_signature_passes(store: CountingPemProvider) -> None:
    signature = store.sign_cmk_metadata("old.pem", True)
    resolver = _resolver(store)
    # The built-in PEM_FILE name is what the provider signs with; a CMK declared under it works.
    resolver.verify_enclave_cmk("PEM_FILE", "old.pem", True, signature, cmk_name="CMK1")


def test_enclave_cmk_declared_under_a_custom_name_needs_that_name_signed(
    store: CountingPemProvider,
) -> None:
    from engine.client.cmk_metadata import sign_cmk_metadata

    resolver = _resolver(store)
    signature = sign_cmk_metadata(store, "COUNTING", "old.pem", True)
    resolver.verify_enclave_cmk("COUNTING", "old.pem", True, signature)
    with pytest.raises(MetadataSignatureError):
        resolver.verify_enclave_cmk("PEM_FILE", "old.pem", True, signature)


def test_enclave_cmk_without_enclave_computations_is_refused(store: CountingPemProvider) -> None:
    signature = store.sign_cmk_metadata("old.pem", False)
    with pytest.raises(OperationalError) as caught:
        _resolver(store).verify_enclave_cmk("PEM_FILE", "old.pem", False, signature, cmk_name="C")
    assert "ENCLAVE_COMPUTATIONS" in str(caught.value)


def test_enclave_cmk_without_signature_is_refused(store: CountingPemProvider) -> None:
    with pytest.raises(OperationalError):
        _resolver(store).verify_enclave_cmk("PEM_FILE", "old.pem", True, None)


def test_enclave_cmk_with_a_forged_flag_is_refused(store: CountingPemProvider) -> None:
    # A host that flips ENCLAVE_COMPUTATIONS on a CMK signed without it must be caught.
    signature = store.sign_cmk_metadata("old.pem", False)
    with pytest.raises(CellAuthenticationError):
        _resolver(store).verify_enclave_cmk("PEM_FILE", "old.pem", True, signature)


def test_enclave_cmk_outside_trusted_paths_is_refused_first(store: CountingPemProvider) -> None:
    signature = store.sign_cmk_metadata("old.pem", True)
    resolver = _resolver(store, trusted_key_paths={"new.pem"})
    store.accesses = 0
    with pytest.raises(OperationalError):
        resolver.verify_enclave_cmk("COUNTING", "old.pem", True, signature)
    assert store.accesses == 0

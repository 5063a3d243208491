"""The resolver remembers CMK metadata signatures that verified, so the RSA check runs once per
metadata row, not once per statement; any change to the row or to the CMK's public key is checked
again, and a signature that failed is refused every time (failures are never remembered)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engine.client.column_keys as column_keys
from engine.client.cek_cache import CekCache
from engine.client.cmk_metadata import MetadataSignatureError, sign_cmk_metadata
from engine.client.column_keys import ColumnKeyResolver
from engine.client.keystores import build_registry
from engine.client.keystores.registry import KeyStoreRegistry
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection, quiet_fetchall

STATEMENTS = 5


@pytest.fixture()
def registry(tmp_path: Path) -> KeyStoreRegistry:
    registry = build_registry(key_directory=str(tmp_path))
    registry.get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    return registry


@pytest.fixture()
def rsa_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real metadata verifications the resolver runs (each one an RSA verify)."""
    calls: list[int] = []
    real: Callable[..., None] = column_keys.verify_cmk_metadata

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(column_keys, "verify_cmk_metadata", counting)
    return calls


def _signature(registry: KeyStoreRegistry, key_path: str = "cmk.pem", flag: bool = True) -> bytes:
    return sign_cmk_metadata(registry.get("PEM_FILE"), "PEM_FILE", key_path, flag)


def _verify(resolver: ColumnKeyResolver, signature: bytes, key_path: str = "cmk.pem") -> None:
    resolver.verify_enclave_cmk("PEM_FILE", key_path, True, signature, cmk_name="cmk")


def test_one_rsa_verify_for_many_statements(
    registry: KeyStoreRegistry, rsa_checks: list[int]
) -> None:
    resolver = ColumnKeyResolver(registry, CekCache())
    signature = _signature(registry)
    for _ in range(STATEMENTS):
        _verify(resolver, signature)
    assert len(rsa_checks) == 1
    # The cache is per resolver (per connection): another one checks for itself.
    _verify(ColumnKeyResolver(registry, CekCache()), signature)
    assert len(rsa_checks) == 2


def test_a_tampered_signature_after_caching_is_still_refused(
    registry: KeyStoreRegistry, rsa_checks: list[int]
) -> None:
    resolver = ColumnKeyResolver(registry, CekCache())
    signature = _signature(registry)
    _verify(resolver, signature)
    tampered = bytearray(signature)
    tampered[len(tampered) // 2] ^= 0x01
    for _ in range(3):
        with pytest.raises(MetadataSignatureError):
            _verify(resolver, bytes(tampered))
    # Each refusal was a real check (nothing was remembered), and the good row still passes.
    assert len(rsa_checks) == 4
    _verify(resolver, signature)
    assert len(rsa_checks) == 4


def test_a_changed_row_is_verified_again(registry: KeyStoreRegistry, rsa_checks: list[int]) -> None:
    resolver = ColumnKeyResolver(registry, CekCache())
    signature = _signature(registry)
    _verify(resolver, signature)
    # Another CMK name over the same key is another row.
    resolver.verify_enclave_cmk("PEM_FILE", "cmk.pem", True, signature, cmk_name="renamed")
    assert len(rsa_checks) == 2
    # The same signature presented for another key path does not verify there.
    registry.get("PEM_FILE").generate_key("other.pem", key_size=2048)
    with pytest.raises(MetadataSignatureError):
        _verify(resolver, signature, key_path="other.pem")
    assert len(rsa_checks) == 3


def test_a_replaced_cmk_key_is_verified_again(
    registry: KeyStoreRegistry, rsa_checks: list[int]
) -> None:
    resolver = ColumnKeyResolver(registry, CekCache())
    signature = _signature(registry)
    _verify(resolver, signature)
    # The key file now holds another key: the remembered success no longer applies.
    registry.get("PEM_FILE").generate_key("cmk.pem", key_size=2048, overwrite=True)
    with pytest.raises(MetadataSignatureError):
        _verify(resolver, signature)
    assert len(rsa_checks) == 2


def test_clear_cache_forgets_verifications(
    registry: KeyStoreRegistry, rsa_checks: list[int]
) -> None:
    resolver = ColumnKeyResolver(registry, CekCache())
    signature = _signature(registry)
    _verify(resolver, signature)
    resolver.clear_cache()
    _verify(resolver, signature)
    assert len(rsa_checks) == 2


def test_a_connection_verifies_its_cmk_once_for_many_enclave_statements(
    tmp_path: Path, rsa_checks: list[int]
) -> None:
    with enclave_connection(tmp_path) as connection:
        connection.execute(f"CREATE TABLE t (id INTEGER, amount BIGINT {RANDOMIZED})")
        connection.cursor().executemany("INSERT INTO t VALUES (?, ?)", [(1, 5), (2, 50)])
        # Nothing so far needed the enclave, so no metadata was checked yet.
        assert rsa_checks == []
        for threshold in range(STATEMENTS):
            rows = quiet_fetchall(connection, "SELECT id FROM t WHERE amount > ?", [threshold])
            assert rows == [(1,), (2,)]
        assert len(rsa_checks) == 1

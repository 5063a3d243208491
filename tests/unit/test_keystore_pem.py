"""The PEM_FILE key store and the provider registry: loading, passwords, errors, registration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.client.keystores import (
    KeyStoreProvider,
    PemFileProvider,
    Pkcs11Provider,
    build_registry,
)
from engine.client.keystores.pem_file import PASSWORD_ENV
from engine.errors import CellAuthenticationError, InterfaceError, OperationalError

CEK = bytes(range(32))
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, key, fmt, encryption=None) -> bytes:  # type: ignore[no-untyped-def]
    pem = key.private_bytes(
        serialization.Encoding.PEM, fmt, encryption or serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return pem


def _key_material_in(message: str, key: rsa.RSAPrivateKey) -> bool:
    numbers = key.private_numbers()
    return any(
        format(value, "x")[:16] in message.lower()
        for value in (numbers.d, numbers.p, numbers.q, numbers.public_numbers.n)
    )


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
)
def test_pkcs8_and_pkcs1_keys_round_trip(tmp_path: Path, rsa_key, fmt) -> None:  # type: ignore[no-untyped-def]
    _write(tmp_path / "cmk.pem", rsa_key, fmt)
    provider = PemFileProvider(tmp_path)
    assert provider.unwrap_cek("cmk.pem", provider.wrap_cek("cmk.pem", CEK)) == CEK


def test_relative_paths_resolve_against_the_key_directory_else_cwd(
    tmp_path: Path, rsa_key, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "keys").mkdir()
    _write(tmp_path / "keys" / "cmk.pem", rsa_key, serialization.PrivateFormat.PKCS8)
    envelope = PemFileProvider(tmp_path / "keys").wrap_cek("cmk.pem", CEK)
    monkeypatch.chdir(tmp_path)
    assert PemFileProvider().unwrap_cek("keys/cmk.pem", envelope) == CEK
    absolute = str(tmp_path / "keys" / "cmk.pem")
    assert PemFileProvider("/nonexistent").unwrap_cek(absolute, envelope) == CEK


def test_key_is_loaded_lazily_and_cached(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    provider = PemFileProvider(tmp_path)  # nothing there yet: construction must not read
    _write(tmp_path / "cmk.pem", rsa_key, serialization.PrivateFormat.PKCS8)
    envelope = provider.wrap_cek("cmk.pem", CEK)
    (tmp_path / "cmk.pem").unlink()
    assert provider.unwrap_cek("cmk.pem", envelope) == CEK  # the loaded key object is reused


def test_encrypted_pem_with_callback(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    _write(
        tmp_path / "cmk.pem",
        rsa_key,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    asked: list[str] = []
    provider = PemFileProvider(tmp_path, lambda path: asked.append(path) or PASSWORD)
    assert provider.unwrap_cek("cmk.pem", provider.wrap_cek("cmk.pem", CEK)) == CEK
    assert asked == ["cmk.pem"]


def test_encrypted_pem_with_environment_password(
    tmp_path: Path, rsa_key, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _write(
        tmp_path / "cmk.pem",
        rsa_key,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    provider = PemFileProvider(tmp_path)
    assert provider.unwrap_cek("cmk.pem", provider.wrap_cek("cmk.pem", CEK)) == CEK


def test_configured_password_does_not_break_unencrypted_files(
    tmp_path: Path, rsa_key, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _write(tmp_path / "cmk.pem", rsa_key, serialization.PrivateFormat.PKCS8)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    provider = PemFileProvider(tmp_path)
    assert provider.unwrap_cek("cmk.pem", provider.wrap_cek("cmk.pem", CEK)) == CEK


def _assert_clean(message: str, rsa_key, *secrets: str) -> None:  # type: ignore[no-untyped-def]
    assert "cmk.pem" in message
    assert "BEGIN" not in message and not _key_material_in(message, rsa_key)
    for secret in secrets:
        assert secret not in message


def test_missing_file(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OperationalError) as caught:
        PemFileProvider(tmp_path).public_key("cmk.pem")
    assert "cannot be read" in str(caught.value)
    _assert_clean(str(caught.value), rsa_key)


def test_wrong_password(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    _write(
        tmp_path / "cmk.pem",
        rsa_key,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    with pytest.raises(OperationalError) as caught:
        PemFileProvider(tmp_path, lambda path: "wrong password!").public_key("cmk.pem")
    assert "password" in str(caught.value)
    _assert_clean(str(caught.value), rsa_key, "wrong password!", PASSWORD)


def test_encrypted_without_password(
    tmp_path: Path, rsa_key, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    _write(
        tmp_path / "cmk.pem",
        rsa_key,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    with pytest.raises(OperationalError) as caught:
        PemFileProvider(tmp_path).public_key("cmk.pem")
    assert PASSWORD_ENV in str(caught.value)
    _assert_clean(str(caught.value), rsa_key, PASSWORD)


def test_not_an_rsa_key(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = _write(tmp_path / "cmk.pem", ec_key, serialization.PrivateFormat.PKCS8)
    with pytest.raises(OperationalError) as caught:
        PemFileProvider(tmp_path).public_key("cmk.pem")
    assert "not an RSA key" in str(caught.value)
    _assert_clean(str(caught.value), rsa_key)
    assert pem.decode()[40:80] not in str(caught.value)


def test_not_a_pem_file(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cmk.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    with pytest.raises(OperationalError) as caught:
        PemFileProvider(tmp_path).public_key("cmk.pem")
    _assert_clean(str(caught.value), rsa_key)


def test_unwrap_errors_carry_no_cause(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    _write(tmp_path / "cmk.pem", rsa_key, serialization.PrivateFormat.PKCS8)
    provider = PemFileProvider(tmp_path)
    with pytest.raises(CellAuthenticationError) as caught:
        provider.rsa_oaep_sha1_decrypt("cmk.pem", b"\x00" * 256)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_generate_key_writes_mode_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    provider = PemFileProvider(tmp_path)
    provider.generate_key("sub/cmk.pem", key_size=2048)
    path = tmp_path / "sub" / "cmk.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(OperationalError) as caught:
        provider.generate_key("sub/cmk.pem", key_size=2048)
    assert "already exists" in str(caught.value)
    assert path.read_bytes() == before
    provider.generate_key("sub/cmk.pem", key_size=2048, overwrite=True)
    assert path.read_bytes() != before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_generate_encrypted_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    PemFileProvider(tmp_path).generate_key("cmk.pem", key_size=2048, encrypt=True)
    assert b"ENCRYPTED" in (tmp_path / "cmk.pem").read_bytes()
    assert PemFileProvider(tmp_path).public_key("cmk.pem").key_size == 2048
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(OperationalError):
        PemFileProvider(tmp_path).generate_key("other.pem", key_size=2048, encrypt=True)


# --- registry -------------------------------------------------------------------------------


def test_registry_has_the_built_ins_case_insensitively() -> None:
    registry = build_registry()
    assert isinstance(registry.get("pem_file"), PemFileProvider)
    assert isinstance(registry.get("Pkcs11"), Pkcs11Provider)


def test_unknown_provider_names_it_and_lists_the_registered(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OperationalError) as caught:
        build_registry().get("MSSQL_CERTIFICATE_STORE")
    message = str(caught.value)
    assert "MSSQL_CERTIFICATE_STORE" in message and "PEM_FILE" in message


def test_custom_provider_is_used(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    class InMemory(KeyStoreProvider):
        """A minimal custom provider: the contract needs only the primitives."""

        name = "IN_MEMORY"

        def public_key(self, key_path: str) -> rsa.RSAPublicKey:
            return rsa_key.public_key()

        def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
            from engine.client.keystores.base import oaep_sha1

            return rsa_key.decrypt(ciphertext, oaep_sha1())

        def sign_sha256_digest(self, key_path: str, digest: bytes) -> bytes:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

            return rsa_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))

    registry = build_registry({"In_Memory": InMemory()})
    provider = registry.get("IN_MEMORY")
    envelope = provider.wrap_cek("any", CEK)
    assert provider.unwrap_cek("any", envelope) == CEK
    # The same key in a PEM file reads the custom provider's envelope: one format.
    _write(tmp_path / "cmk.pem", rsa_key, serialization.PrivateFormat.PKCS8)
    assert PemFileProvider(tmp_path).unwrap_cek("cmk.pem", envelope) == CEK
    assert "In_Memory" in registry.names()


def test_custom_provider_cannot_shadow_a_built_in() -> None:
    with pytest.raises(InterfaceError):
        build_registry({"pem_file": PemFileProvider()})


def test_custom_provider_must_be_a_provider() -> None:
    with pytest.raises(InterfaceError):
        build_registry({"THING": object()})  # type: ignore[dict-item]

"""The public CEK envelope vectors: verify and unwrap real envelopes, parse the key-less ones.

Which signature form each vector uses is asserted too: all of SQL Server native, go-mssqldb and
mssql-jdbc JKS write the single-hash form (PKCS#1 v1.5 over SHA-256 of the signed message).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from engine.client.cek_envelope import parse_envelope
from engine.client.keystores import PemFileProvider
from engine.errors import CellAuthenticationError
from tests.support.vectors import interop_cases


def _cmk_pem(vector: dict[str, Any]) -> bytes:
    """The vector's CMK as a PKCS#8 PEM: from its PEM, or from its PFX and password."""
    if vector.get("cmk_pfx_hex"):
        # The SqlClient test certificate has a negative serial number, which cryptography
        # still loads but warns about; only the key matters here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
            key, _cert, _extra = pkcs12.load_key_and_certificates(
                bytes.fromhex(vector["cmk_pfx_hex"]), vector["cmk_pfx_password"].encode("utf-8")
            )
        assert key is not None
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return str(vector["cmk_private_key_pkcs8_pem"]).encode("ascii")


def _provider(vector: dict[str, Any], directory: Path) -> PemFileProvider:
    (directory / "cmk.pem").write_bytes(_cmk_pem(vector))
    return PemFileProvider(directory)


@pytest.mark.parametrize("vector", interop_cases("cek_unwrap"))
def test_unwrap_vector(vector: dict[str, Any], tmp_path: Path) -> None:
    provider = _provider(vector, tmp_path)
    envelope = bytes.fromhex(vector["encrypted_cek_hex"])
    assert provider.unwrap_cek("cmk.pem", envelope).hex() == vector["plaintext_cek_hex"]


@pytest.mark.parametrize("vector", interop_cases("cek_unwrap"))
def test_vector_signature_form_is_single_hash(vector: dict[str, Any], tmp_path: Path) -> None:
    public_key = _provider(vector, tmp_path).public_key("cmk.pem")
    parsed = parse_envelope(bytes.fromhex(vector["encrypted_cek_hex"]))
    digest = hashlib.sha256(parsed.signed_message).digest()
    public_key.verify(parsed.signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public_key.verify(
            parsed.signature,
            hashlib.sha256(digest).digest(),
            padding.PKCS1v15(),
            Prehashed(hashes.SHA256()),
        )


@pytest.mark.parametrize("vector", interop_cases("cek_unwrap"))
def test_vector_key_path_is_recorded_as_written(vector: dict[str, Any]) -> None:
    parsed = parse_envelope(bytes.fromhex(vector["encrypted_cek_hex"]))
    assert parsed.key_path == vector["key_path"]


@pytest.mark.parametrize("vector", interop_cases("cek_unwrap"))
def test_tampered_vector_is_refused(vector: dict[str, Any], tmp_path: Path) -> None:
    provider = _provider(vector, tmp_path)
    envelope = bytearray.fromhex(vector["encrypted_cek_hex"])
    envelope[len(envelope) // 2] ^= 0x01  # inside the ciphertext
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("cmk.pem", bytes(envelope))


@pytest.mark.parametrize("vector", interop_cases("cek_envelope_parse"))
def test_parse_vector(vector: dict[str, Any]) -> None:
    expected = vector["expected_parse"]
    parsed = parse_envelope(bytes.fromhex(vector["encrypted_cek_hex"]))
    assert parsed.version == expected["version"]
    assert len(parsed.key_path_bytes) == expected["key_path_len_bytes"]
    assert len(parsed.ciphertext) == expected["ciphertext_len"]
    assert len(parsed.signature) == expected["signature_len"]
    assert parsed.key_path == expected["key_path"]

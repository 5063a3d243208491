"""CMK metadata signatures (spec 2.2): the signed message, signing, and what must fail."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from engine.client.cmk_metadata import (
    MetadataSignatureError,
    metadata_digest,
    sign_cmk_metadata,
    verify_cmk_metadata,
)
from engine.client.keystores import PemFileProvider
from engine.errors import CellAuthenticationError


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> PemFileProvider:
    directory: Path = tmp_path_factory.mktemp("metadata-keys")
    provider = PemFileProvider(directory)
    provider.generate_key("cmk.pem", key_size=2048)
    provider.generate_key("other.pem", key_size=2048)
    return provider


def test_digest_is_sha256_of_the_lower_cased_utf16_message() -> None:
    # The message as the spec spells it out, written independently of the implementation.
    expected = hashlib.sha256(
        "mssql_certificate_storecurrentuser/my/b3c66ffbe1db57419792e24aa970455bfac30757true".encode(
            "utf-16-le"
        )
    ).digest()
    actual = metadata_digest(
        "MSSQL_CERTIFICATE_STORE", "CurrentUser/My/b3c66ffbe1db57419792e24aa970455bfac30757", True
    )
    assert actual == expected


def test_signature_is_single_hash_pkcs1v15(provider: PemFileProvider) -> None:
    signature = provider.sign_cmk_metadata("cmk.pem", True)
    message = "pem_filecmk.pemtrue".encode("utf-16-le")
    provider.public_key("cmk.pem").verify(
        signature, hashlib.sha256(message).digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
    )


def test_round_trip(provider: PemFileProvider) -> None:
    for allow in (True, False):
        signature = provider.sign_cmk_metadata("cmk.pem", allow)
        provider.verify_cmk_metadata("cmk.pem", allow, signature)


def test_verification_is_case_insensitive_like_the_message(provider: PemFileProvider) -> None:
    signature = sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", True)
    verify_cmk_metadata(provider, "pem_file", "CMK.PEM".lower(), True, signature)


@pytest.mark.parametrize(
    ("provider_name", "key_path", "allow"),
    [
        ("PEM_FILE", "cmk.pem", False),  # the enclave flag flipped
        ("PKCS11", "cmk.pem", True),  # another provider name
        ("PEM_FILE", "other.pem", True),  # another key path (and key)
    ],
)
def test_changed_metadata_fails(
    provider: PemFileProvider, provider_name: str, key_path: str, allow: bool
) -> None:
    signature = sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", True)
    with pytest.raises(MetadataSignatureError) as caught:
        verify_cmk_metadata(provider, provider_name, key_path, allow, signature)
    assert isinstance(caught.value, CellAuthenticationError)
    assert signature.hex() not in str(caught.value)


@pytest.mark.parametrize("mutation", ["flip", "truncate", "empty"])
def test_damaged_signature_fails(provider: PemFileProvider, mutation: str) -> None:
    signature = bytearray(provider.sign_cmk_metadata("cmk.pem", True))
    if mutation == "flip":
        signature[10] ^= 0x04
    elif mutation == "truncate":
        del signature[-1]
    else:
        signature.clear()
    with pytest.raises(MetadataSignatureError):
        provider.verify_cmk_metadata("cmk.pem", True, bytes(signature))


def test_jdbc_double_hash_form_is_accepted_on_read(provider: PemFileProvider) -> None:
    # mssql-jdbc signs SHA256withRSA over the metadata hash, i.e. hashes twice.
    digest = metadata_digest("PEM_FILE", "cmk.pem", True)
    signature = provider._private_key("cmk.pem").sign(digest, padding.PKCS1v15(), hashes.SHA256())
    provider.verify_cmk_metadata("cmk.pem", True, signature)


def test_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(MetadataSignatureError()))
    assert str(error) == MetadataSignatureError.MESSAGE

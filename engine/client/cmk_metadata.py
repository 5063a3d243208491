"""The CMK metadata signature (ENCLAVE_COMPUTATIONS (SIGNATURE = ...)), spec section 2.2.

It owns the signed message and its hashing; key operations go through a KeyStoreProvider. It must
not decide policy (trusted paths, whether a CEK may go to an enclave): that is column_keys.py.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from engine.client.keystores.base import verify_sha256_digest_signature
from engine.errors import CellAuthenticationError

if TYPE_CHECKING:
    from engine.client.keystores.base import KeyStoreProvider

__all__ = ["metadata_digest", "sign_cmk_metadata", "verify_cmk_metadata", "MetadataSignatureError"]


class MetadataSignatureError(CellAuthenticationError):
    """The CMK metadata signature does not match the provider, key path and enclave flag."""

    MESSAGE = (
        "column master key metadata signature did not verify: the KEY_STORE_PROVIDER_NAME, "
        "KEY_PATH or ENCLAVE_COMPUTATIONS setting was changed, or the signature was made with "
        "another key; recreate the column master key with a fresh signature"
    )


def metadata_digest(provider_name: str, key_path: str, allow_enclave_computations: bool) -> bytes:
    """SHA-256 of UTF-16LE(lowercase(provider_name + key_path + "True"|"False")).

    >>> a = metadata_digest("PEM_FILE", "Keys/CMK.pem", True)
    >>> a == metadata_digest("pem_file", "keys/cmk.pem", True)  # case-insensitive by design
    True
    >>> a == metadata_digest("PEM_FILE", "Keys/CMK.pem", False)
    False
    """
    flag = "True" if allow_enclave_computations else "False"
    # SqlClient lower-cases with the invariant culture; str.lower() is the closest match.
    message = (provider_name + key_path + flag).lower().encode("utf-16-le")
    return hashlib.sha256(message).digest()


def sign_cmk_metadata(
    provider: KeyStoreProvider,
    provider_name: str,
    key_path: str,
    allow_enclave_computations: bool,
) -> bytes:
    """Sign the metadata with the CMK itself (single hash, as SqlClient writes it)."""
    digest = metadata_digest(provider_name, key_path, allow_enclave_computations)
    return provider.sign_sha256_digest(key_path, digest)


def verify_cmk_metadata(
    provider: KeyStoreProvider,
    provider_name: str,
    key_path: str,
    allow_enclave_computations: bool,
    signature: bytes,
) -> None:
    """Raise MetadataSignatureError unless `signature` covers this metadata under the CMK.

    Reading also accepts the double-hash form that the JDBC key store provider writes.
    """
    digest = metadata_digest(provider_name, key_path, allow_enclave_computations)
    verify_sha256_digest_signature(
        provider.public_key(key_path),
        digest,
        bytes(signature),
        failure=MetadataSignatureError(),
    )

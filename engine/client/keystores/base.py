"""The key store provider contract: what a CMK store must do, and the operations built on it.

A provider supplies only RSA key operations on a CMK named by a key path. The envelope layout
(spec 2.1) lives once in `engine.client.cek_envelope` and the metadata signature (spec 2.2) once in
`engine.client.cmk_metadata`; providers must not re-implement either, nor hand out private keys.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from engine.errors import CellAuthenticationError

__all__ = ["KeyStoreProvider", "oaep_sha1", "verify_sha256_digest_signature"]


def oaep_sha1() -> padding.OAEP:
    """The one CEK wrapping padding of the format: RSA-OAEP, SHA-1, MGF1-SHA-1, empty label.

    >>> oaep_sha1().algorithm.name
    'sha1'
    """
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def verify_sha256_digest_signature(
    public_key: rsa.RSAPublicKey,
    digest: bytes,
    signature: bytes,
    *,
    accept_double_hash: bool = True,
    failure: Exception | None = None,
) -> None:
    """Check an RSASSA-PKCS1-v1_5 signature whose DigestInfo holds `digest` (a SHA-256 value).

    The single-hash form signs SHA-256(message), which is `digest`. When `accept_double_hash` is
    set, the form some providers write (CNG/CSP, JDBC metadata) is also accepted: the signature
    is over SHA-256(digest). A mismatch raises `failure` (CellAuthenticationError by default).

    >>> from cryptography.hazmat.primitives.asymmetric import rsa as _rsa
    >>> key = _rsa.generate_private_key(public_exponent=65537, key_size=1024)
    >>> digest = hashlib.sha256(b"message").digest()
    >>> sig = key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    >>> verify_sha256_digest_signature(key.public_key(), digest, sig)  # returns None
    >>> verify_sha256_digest_signature(key.public_key(), digest, sig[::-1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.CellAuthenticationError: cell authentication failed: ...
    """
    candidates = [digest]
    if accept_double_hash:
        candidates.append(hashlib.sha256(digest).digest())
    for candidate in candidates:
        try:
            public_key.verify(signature, candidate, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        except InvalidSignature:
            continue
        return
    raise failure if failure is not None else CellAuthenticationError()


class KeyStoreProvider(ABC):
    """A store of column master keys (CMKs), each named by a provider-specific key path.

    Subclasses implement the four primitives below. Everything else (envelopes, metadata
    signatures) is built here on top of them, so a custom provider cannot get a format wrong.
    """

    #: The KEY_STORE_PROVIDER_NAME this provider answers to (compared case-insensitively).
    name: str = ""

    # --- primitives a provider implements -------------------------------------------------

    @abstractmethod
    def public_key(self, key_path: str) -> rsa.RSAPublicKey:
        """The CMK's RSA public key, used to wrap CEKs and verify signatures."""

    @abstractmethod
    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        """RSA-OAEP (SHA-1, MGF1-SHA-1) decryption with the CMK's private key.

        A ciphertext that does not decrypt raises CellAuthenticationError.
        """

    @abstractmethod
    def sign_sha256_digest(self, key_path: str, digest: bytes) -> bytes:
        """An RSASSA-PKCS1-v1_5 signature whose DigestInfo is SHA-256 with value `digest`."""

    # --- derived operations ---------------------------------------------------------------

    def key_size_bytes(self, key_path: str) -> int:
        """The CMK modulus size in bytes (256 for RSA-2048)."""
        return (self.public_key(key_path).key_size + 7) // 8

    def rsa_oaep_sha1_encrypt(self, key_path: str, plaintext: bytes) -> bytes:
        """Wraps with the public key; providers rarely need to override this."""
        return self.public_key(key_path).encrypt(bytes(plaintext), oaep_sha1())

    def envelope_key_path(self, key_path: str) -> str:
        """The key path to record inside a new envelope; overridden to drop secrets (a PIN)."""
        return key_path

    def wrap_cek(self, key_path: str, cek: bytes) -> bytes:
        """The complete ENCRYPTED_VALUE envelope of `cek` under this CMK: wrapped and signed."""
        from engine.client.cek_envelope import wrap_cek

        return wrap_cek(self, key_path, cek)

    def unwrap_cek(self, key_path: str, envelope: bytes) -> bytes:
        """Parse `envelope`, verify its signature, and only then unwrap the CEK it holds."""
        from engine.client.cek_envelope import unwrap_cek

        return unwrap_cek(self, key_path, envelope)

    def sign_cmk_metadata(self, key_path: str, allow_enclave_computations: bool) -> bytes:
        """The ENCLAVE_COMPUTATIONS (SIGNATURE = ...) value for this CMK (spec 2.2)."""
        from engine.client.cmk_metadata import sign_cmk_metadata

        return sign_cmk_metadata(self, self.name, key_path, allow_enclave_computations)

    def verify_cmk_metadata(
        self, key_path: str, allow_enclave_computations: bool, signature: bytes
    ) -> None:
        """Raise CellAuthenticationError unless `signature` covers this CMK's metadata."""
        from engine.client.cmk_metadata import verify_cmk_metadata

        verify_cmk_metadata(self, self.name, key_path, allow_enclave_computations, signature)

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release sessions or cached key objects; the provider stays usable afterwards."""

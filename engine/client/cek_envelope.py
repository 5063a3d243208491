"""The CEK envelope (ENCRYPTED_VALUE of CREATE COLUMN ENCRYPTION KEY), spec section 2.1.

It owns the byte layout, the order of checks (parse, sizes, signature, then unwrap) and rewrapping.
It must not touch private keys: every key operation goes through a KeyStoreProvider. Any
malformed or unauthentic envelope raises the one EnvelopeAuthenticationError (a
CellAuthenticationError with one fixed message, so it is no oracle), before any unwrap.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.client.keystores.base import verify_sha256_digest_signature
from engine.errors import CellAuthenticationError

if TYPE_CHECKING:
    from engine.client.keystores.base import KeyStoreProvider

__all__ = [
    "VERSION",
    "Envelope",
    "EnvelopeAuthenticationError",
    "parse_envelope",
    "build_envelope",
    "wrap_cek",
    "unwrap_cek",
    "rewrap_envelope",
]

VERSION = 1
_HEADER = struct.Struct("<BHH")  # version, key path length (bytes), ciphertext length


class EnvelopeAuthenticationError(CellAuthenticationError):
    """A CEK envelope that failed its checks against the CMK named for it.

    Malformed, resized, re-signed or wrapped under another key: the message is the same for each,
    and it names the fix most users need (the CMK that made the envelope, at its KEY_PATH).
    """

    MESSAGE = (
        "column encryption key envelope did not verify against its column master key: the key "
        "store holds a different key under that KEY_PATH, or the envelope was changed; make the "
        "column master key that wrapped this key available at its KEY_PATH (for PEM_FILE, the "
        "file under key_dir)"
    )


@dataclass(frozen=True)
class Envelope:
    """The fields of a parsed envelope. `signed_message` is version .. end of ciphertext."""

    version: int
    key_path_bytes: bytes
    ciphertext: bytes
    signature: bytes
    signed_message: bytes

    @property
    def key_path(self) -> str:
        """The recorded key path for troubleshooting; undecodable bytes become U+FFFD."""
        return self.key_path_bytes.decode("utf-16-le", errors="replace")

    def __repr__(self) -> str:
        # The default repr would print ciphertext and signature bytes; keep them out of logs.
        return (
            f"Envelope(version={self.version}, key_path={self.key_path!r}, "
            f"ciphertext_len={len(self.ciphertext)}, signature_len={len(self.signature)})"
        )


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into its fields, checking only the structure (no key needed).

    The key path bytes are kept as they are: writers disagree on their case and even their
    encoding, and the path is for troubleshooting only, so it is never validated.

    >>> blob = build_envelope("k", b"\\x01" * 4, lambda digest: b"\\x02" * 4)
    >>> env = parse_envelope(blob)
    >>> (env.version, env.key_path, len(env.ciphertext), len(env.signature))
    (1, 'k', 4, 4)
    >>> parse_envelope(blob[:-1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.CellAuthenticationError: cell authentication failed: ...
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise CellAuthenticationError()
    version, key_path_len, ciphertext_len = _HEADER.unpack_from(data)
    if version != VERSION or ciphertext_len == 0:
        raise CellAuthenticationError()
    ciphertext_start = _HEADER.size + key_path_len
    signature_start = ciphertext_start + ciphertext_len
    # The signature fills the rest and is as long as the RSA modulus, like the ciphertext.
    if len(data) - signature_start != ciphertext_len:
        raise CellAuthenticationError()
    return Envelope(
        version=version,
        key_path_bytes=data[_HEADER.size : ciphertext_start],
        ciphertext=data[ciphertext_start:signature_start],
        signature=data[signature_start:],
        signed_message=data[:signature_start],
    )


def build_envelope(key_path: str, wrapped_cek: bytes, sign: Callable[[bytes], bytes]) -> bytes:
    """Lay out an envelope; `sign` gets SHA-256 of the signed message and returns the signature.

    The key path is written as given, UTF-16LE, without lower-casing (as current SqlClient does).

    >>> blob = build_envelope("Ab", b"\\xaa" * 2, lambda digest: b"\\xbb" * 2)
    >>> blob.hex()  # version, path length 4, ciphertext length 2, "Ab", ciphertext, signature
    '010400020041006200aaaabbbb'
    """
    key_path_bytes = key_path.encode("utf-16-le")
    wrapped_cek = bytes(wrapped_cek)
    if len(key_path_bytes) > 0xFFFF or not 0 < len(wrapped_cek) <= 0xFFFF:
        raise ValueError("key path or wrapped key too long for the envelope's 16-bit lengths")
    message = (
        _HEADER.pack(VERSION, len(key_path_bytes), len(wrapped_cek)) + key_path_bytes + wrapped_cek
    )
    signature = sign(hashlib.sha256(message).digest())
    if len(signature) != len(wrapped_cek):
        raise ValueError("the signature must be as long as the wrapped key (the modulus size)")
    return message + signature


def wrap_cek(provider: KeyStoreProvider, key_path: str, cek: bytes) -> bytes:
    """Wrap `cek` with RSA-OAEP-SHA1 under the CMK at `key_path` and sign the envelope."""
    wrapped = provider.rsa_oaep_sha1_encrypt(key_path, cek)
    return build_envelope(
        provider.envelope_key_path(key_path),
        wrapped,
        lambda digest: provider.sign_sha256_digest(key_path, digest),
    )


def unwrap_cek(provider: KeyStoreProvider, key_path: str, envelope: bytes) -> bytes:
    """Return the CEK in `envelope`: parse, check sizes, verify the signature, then unwrap.

    Both the single-hash and the double-hash signature forms are accepted (spec 2.1 table).
    """
    try:
        parsed = parse_envelope(envelope)
    except CellAuthenticationError:
        raise EnvelopeAuthenticationError() from None
    size = provider.key_size_bytes(key_path)
    if len(parsed.ciphertext) != size or len(parsed.signature) != size:
        raise EnvelopeAuthenticationError()
    verify_sha256_digest_signature(
        provider.public_key(key_path),
        hashlib.sha256(parsed.signed_message).digest(),
        parsed.signature,
        failure=EnvelopeAuthenticationError(),
    )
    try:
        return provider.rsa_oaep_sha1_decrypt(key_path, parsed.ciphertext)
    except CellAuthenticationError:
        raise EnvelopeAuthenticationError() from None


def rewrap_envelope(
    old_provider: KeyStoreProvider,
    old_key_path: str,
    envelope: bytes,
    new_provider: KeyStoreProvider,
    new_key_path: str,
) -> bytes:
    """The same CEK, verified under the old CMK and wrapped and signed under the new one.

    This is the building block of CMK rotation: add the result as a second ENCRYPTED_VALUE.
    """
    cek = bytearray(unwrap_cek(old_provider, old_key_path, envelope))
    try:
        return wrap_cek(new_provider, new_key_path, bytes(cek))
    finally:
        cek[:] = bytes(len(cek))

"""A slow, pure-Python implementation of the AE cell format (spec section 1) on pyca/cryptography.

It is the test oracle for the native codec and the "pyca loop" baseline of bench/codec.py.
It must never be used on a hot path: it handles one cell per Python call.
"""

from __future__ import annotations

import hmac
import os

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from engine.errors import CellAuthenticationError, ProgrammingError

__all__ = [
    "ReferenceCodec",
    "derive_keys",
    "encrypt_cell",
    "encrypt_deterministic",
    "encrypt_randomized",
    "decrypt_cell",
]

VERSION = b"\x01"
_ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA256"
_LABEL = "Microsoft SQL Server cell {} key with encryption algorithm:{} and key length:256"


def _hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    for part in parts:
        mac.update(part)
    return mac.finalize()


def derive_keys(root_key: bytes) -> tuple[bytes, bytes, bytes]:
    """(enc_key, mac_key, iv_key): HMAC-SHA256 keyed by the CEK over UTF-16LE labels (spec 1.1).

    >>> [len(k) for k in derive_keys(bytes(32))]
    [32, 32, 32]
    """
    if len(root_key) != 32:
        raise ProgrammingError(
            f"a column encryption key must be exactly 32 bytes, got {len(root_key)}"
        )
    return tuple(  # type: ignore[return-value]
        _hmac_sha256(root_key, _LABEL.format(which, _ALGORITHM).encode("utf-16-le"))
        for which in ("encryption", "MAC", "IV")
    )


class ReferenceCodec:
    """The cell codec for one root key, with the derived keys computed once.

    >>> codec = ReferenceCodec(bytes(32))
    >>> codec.decrypt(codec.encrypt(b"abc", bytes(16)))
    b'abc'
    """

    def __init__(self, root_key: bytes) -> None:
        self._enc_key, self._mac_key, self._iv_key = derive_keys(root_key)

    def encrypt(self, plaintext: bytes, iv: bytes) -> bytes:
        """version || MAC || IV || AES-256-CBC(PKCS7(plaintext)) with the given 16-byte IV."""
        if len(iv) != 16:
            raise ProgrammingError(f"an IV must be 16 bytes, got {len(iv)}")
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        tag = _hmac_sha256(self._mac_key, VERSION, iv, ciphertext, b"\x01")
        return VERSION + tag + iv + ciphertext

    def deterministic_iv(self, plaintext: bytes) -> bytes:
        """IV = HMAC-SHA256(iv_key, plaintext)[:16] (spec 1.4)."""
        return _hmac_sha256(self._iv_key, plaintext)[:16]

    def decrypt(self, cell: bytes) -> bytes:
        """Checks length, version and MAC (constant time), then decrypts and strips PKCS7.

        Every failure raises CellAuthenticationError with its one fixed message.
        """
        if len(cell) < 65 or (len(cell) - 49) % 16 != 0 or cell[:1] != VERSION:
            raise CellAuthenticationError()
        iv, ciphertext = cell[33:49], cell[49:]
        expected = _hmac_sha256(self._mac_key, VERSION, iv, ciphertext, b"\x01")
        if not hmac.compare_digest(expected, cell[1:33]):
            raise CellAuthenticationError()
        decryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise CellAuthenticationError() from None


def encrypt_cell(root_key: bytes, plaintext: bytes, iv: bytes) -> bytes:
    """A cell with the given 16-byte IV.

    >>> len(encrypt_cell(bytes(32), b"12345678", bytes(16)))
    65
    """
    return ReferenceCodec(root_key).encrypt(plaintext, iv)


def encrypt_deterministic(root_key: bytes, plaintext: bytes) -> bytes:
    """A deterministic cell: IV = HMAC-SHA256(iv_key, plaintext)[:16] (spec 1.4).

    >>> encrypt_deterministic(bytes(32), b"a") == encrypt_deterministic(bytes(32), b"a")
    True
    """
    codec = ReferenceCodec(root_key)
    return codec.encrypt(plaintext, codec.deterministic_iv(plaintext))


def encrypt_randomized(root_key: bytes, plaintext: bytes) -> bytes:
    """A randomized cell with a fresh random IV.

    >>> encrypt_randomized(bytes(32), b"a") != encrypt_randomized(bytes(32), b"a")
    True
    """
    return encrypt_cell(root_key, plaintext, os.urandom(16))


def decrypt_cell(root_key: bytes, cell: bytes) -> bytes:
    """Verifies and decrypts one cell; every failure raises CellAuthenticationError.

    >>> decrypt_cell(bytes(32), encrypt_deterministic(bytes(32), b"abc"))
    b'abc'
    """
    return ReferenceCodec(root_key).decrypt(cell)

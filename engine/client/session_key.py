"""The ECDH session key of spec 5.5: session_key = SHA-256(shared P-384 x-coordinate).

It makes the client's ephemeral P-384 key and derives the 32-byte session key as a bytearray the
caller wipes after use. It must not derive a key from an enclave ECDH key that attestation has
not verified (call it only with `VerifiedEnclave.ecdh_public`), and never logs key bytes.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec

from engine.errors import AttestationError, InterfaceError

ECDH_PUBLIC_LEN = 97


def new_client_ecdh_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ephemeral P-384 key for one session.

    >>> new_client_ecdh_key().curve.name
    'secp384r1'
    """
    return ec.generate_private_key(ec.SECP384R1())


def derive_session_key(
    client_private_key: ec.EllipticCurvePrivateKey, enclave_ecdh_public: bytes
) -> bytearray:
    """SHA-256 of the raw 48-byte shared x-coordinate; both sides get the same 32 bytes.

    >>> client, enclave = new_client_ecdh_key(), new_client_ecdh_key()
    >>> from cryptography.hazmat.primitives import serialization
    >>> point = enclave.public_key().public_bytes(
    ...     serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    >>> key = derive_session_key(client, point)
    >>> len(key), type(key).__name__
    (32, 'bytearray')
    """
    if (
        not isinstance(client_private_key, ec.EllipticCurvePrivateKey)
        or client_private_key.curve.name != "secp384r1"
    ):
        raise InterfaceError("derive_session_key needs a P-384 key from new_client_ecdh_key()")
    point = bytes(enclave_ecdh_public)
    if len(point) != ECDH_PUBLIC_LEN or point[:1] != b"\x04":
        raise AttestationError(
            "the enclave ECDH public key is not a 97-byte uncompressed P-384 point"
        )
    try:
        enclave_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point)
    except ValueError:
        raise AttestationError("the enclave ECDH public key is not a point on P-384") from None
    # pyca returns Z, the x-coordinate, left-padded to 48 bytes: exactly what spec 5.5 hashes.
    # Python bytes cannot be wiped; the digest goes straight into a bytearray the caller owns.
    shared_x = client_private_key.exchange(ec.ECDH(), enclave_key)
    return bytearray(hashlib.sha256(shared_x).digest())

"""A stand-in for the C enclave's evidence producer: builds evidence format v2 byte for byte.

It writes the layout of docs/attestation.md independently of the service's parser, so a bug in
one does not hide in the other, and every field has a knob to break it. It is test code only: it
must not be imported by engine/ or enclave/, and its keys are throwaway.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.attestation.platform import load_or_create_platform_key

# The identity key's domain-separation label of format v2, spelled out here rather than imported
# from the parser, so the stand-in stays independent of the code it tests.
ECDH_LABEL = b"EnclaveSQL evidence v2\x00"

DEFAULT_MEASUREMENT = hashlib.sha256(b"enclavesql simulated enclave code").digest()
_UNSET: Any = object()


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA384()))


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class SimulatedEnclave:
    """One simulated enclave instance: an identity key and an ephemeral ECDH key, both P-384,
    and the platform key of `platform_dir` that signs its reports."""

    platform_dir: Path
    measurement: bytes = DEFAULT_MEASUREMENT
    svn: int = 1
    debug: bool = False
    identity_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    ecdh_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    @property
    def platform_key(self) -> ec.EllipticCurvePrivateKey:
        return load_or_create_platform_key(self.platform_dir)

    @property
    def identity_public_key_der(self) -> bytes:
        return _spki(self.identity_key)

    @property
    def ecdh_public(self) -> bytes:
        return _point(self.ecdh_key)

    def ecdh_signature(self, nonce: bytes, label: bytes = ECDH_LABEL) -> bytes:
        """The identity key's signature binding the ECDH key to nonce; another label breaks it."""
        return _sign(self.identity_key, label + self.ecdh_public + nonce)

    def evidence(
        self,
        nonce: bytes,
        *,
        magic: bytes = b"EEV2",
        flags: int | None = None,
        measurement: bytes | None = None,
        svn: int | None = None,
        report_data: bytes | None = None,
        nonce_len: int | None = None,
        ecdh_public: bytes | None = None,
        platform_key: ec.EllipticCurvePrivateKey | None = None,
        platform_sig: bytes | None = None,
        identity_der: bytes | None = None,
        ecdh_signing_key: ec.EllipticCurvePrivateKey | None = None,
        ecdh_sig: bytes | None = None,
        ecdh_label: bytes = ECDH_LABEL,
        trailing: bytes = b"",
    ) -> bytes:
        """Evidence as the enclave will send it; each keyword replaces one field to break it.

        Signatures are computed over the (possibly broken) fields unless a signature is given,
        so each knob breaks exactly one check.
        """
        identity = self.identity_public_key_der if identity_der is None else identity_der
        point = self.ecdh_public if ecdh_public is None else ecdh_public
        report = (
            magic
            + struct.pack("<I", (1 if self.debug else 0) if flags is None else flags)
            + (self.measurement if measurement is None else measurement)
            + struct.pack("<I", self.svn if svn is None else svn)
            + (hashlib.sha256(identity).digest() if report_data is None else report_data)
            + struct.pack("<H", len(nonce) if nonce_len is None else nonce_len)
            + nonce
            + point
        )
        if platform_sig is None:
            platform_sig = _sign(platform_key or self.platform_key, report)
        if ecdh_sig is None:
            ecdh_sig = _sign(ecdh_signing_key or self.identity_key, ecdh_label + point + nonce)
        return (
            report
            + struct.pack("<H", len(platform_sig))
            + platform_sig
            + struct.pack("<H", len(identity))
            + identity
            + struct.pack("<H", len(ecdh_sig))
            + ecdh_sig
            + trailing
        )

    def session_key(self, client_ecdh_public: bytes) -> bytes:
        """The enclave side of spec 5.5, with pyca directly (not the client's code)."""
        client_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP384R1(), client_ecdh_public
        )
        return hashlib.sha256(self.ecdh_key.exchange(ec.ECDH(), client_key)).digest()


def new_nonce(length: int = 32) -> bytes:
    return os.urandom(length)

"""Evidence format v2: a strict parser, and the signature checks shared by service and client.

It turns the enclave's evidence bytes into an `Evidence` record and verifies the two signatures
that the format carries. It must not apply policy (that is `appraisal`), do I/O, or put any byte
of the evidence into an error message. The byte layout is documented in docs/attestation.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAGIC = b"EEV2"
# Format v1 (magic EEV1) signed the ECDH key without a label; it is refused by name below.
MAGIC_V1 = b"EEV1"
# Domain separation: the identity key signs ECDH_SIGNATURE_LABEL || ecdh_public || nonce, so a
# signature it made for any other purpose cannot pass as a key binding. The NUL ends the label,
# so no label is a prefix of another.
ECDH_SIGNATURE_LABEL = b"EnclaveSQL evidence v2\0"
FLAG_DEBUG = 0x1
KNOWN_FLAGS = FLAG_DEBUG
MEASUREMENT_LEN = 32
REPORT_DATA_LEN = 32
NONCE_MIN_LEN = 16
NONCE_MAX_LEN = 256
ECDH_PUBLIC_LEN = 97
# A DER ECDSA P-384 signature is SEQUENCE { INTEGER r, INTEGER s } with each integer at most
# 49 bytes (48 plus a sign byte): 2 + 2 * (2 + 49) = 104.
SIGNATURE_MAX_LEN = 104
# A P-384 SubjectPublicKeyInfo is 120 bytes uncompressed; the bound only stops absurd inputs.
IDENTITY_MAX_LEN = 512
# The largest well-formed evidence, used by the service to cap request bodies.
EVIDENCE_MAX_LEN = (
    (4 + 4 + MEASUREMENT_LEN + 4 + REPORT_DATA_LEN + 2 + NONCE_MAX_LEN + ECDH_PUBLIC_LEN)
    + (2 + SIGNATURE_MAX_LEN) * 2
    + (2 + IDENTITY_MAX_LEN)
)

_HEADER = struct.Struct("<4sI32sI32sH")
# AlgorithmIdentifier { id-ecPublicKey (1.2.840.10045.2.1), namedCurve secp384r1 (1.3.132.0.34) },
# DER-encoded: the bytes that follow the SubjectPublicKeyInfo's outer SEQUENCE header.
_P384_ALGORITHM = bytes.fromhex("301006072a8648ce3d020106052b81040022")


class EvidenceError(ValueError):
    """One evidence check failed; `code` names the check and `status` is the HTTP answer.

    The reason is a sentence for people; it never contains evidence bytes.

    >>> error = EvidenceError("evidence_malformed", "the magic is not EEV1")
    >>> error.code, error.status, str(error)
    ('evidence_malformed', 400, 'the magic is not EEV1')
    """

    def __init__(self, code: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status

    def __reduce__(self) -> tuple[type[EvidenceError], tuple[str, str, int]]:
        return (type(self), (self.code, self.reason, self.status))


@dataclass(frozen=True)
class Evidence:
    """The fields of one parsed evidence; `report` is the exact byte range the platform signed."""

    report: bytes
    flags: int
    measurement: bytes
    svn: int
    report_data: bytes
    nonce: bytes
    ecdh_public: bytes
    platform_signature: bytes
    identity_public_key_der: bytes
    ecdh_signature: bytes

    @property
    def debug(self) -> bool:
        return bool(self.flags & FLAG_DEBUG)


def _malformed(reason: str) -> EvidenceError:
    return EvidenceError("evidence_malformed", reason, 400)


class _Reader:
    """A cursor over the evidence that refuses to read past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, length: int, field: str) -> bytes:
        end = self.offset + length
        if end > len(self.data):
            raise _malformed(
                f"the evidence ends inside {field} (needs {length} bytes at offset "
                f"{self.offset}, has {len(self.data) - self.offset}); send the complete evidence"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def take_u16_prefixed(self, field: str, minimum: int, maximum: int) -> bytes:
        (length,) = struct.unpack("<H", self.take(2, f"{field}_len"))
        if not minimum <= length <= maximum:
            raise _malformed(
                f"{field}_len is {length}, outside {minimum}..{maximum}; "
                "the evidence was not produced by a format v2 enclave"
            )
        return self.take(length, field)


def parse_evidence(data: bytes) -> Evidence:
    """Split evidence v2 into its fields, checking every length, the magic and the flags.

    It also checks that the identity key is a P-384 SubjectPublicKeyInfo and the ECDH key a point
    on P-384, so later steps can rely on both. Signatures are checked elsewhere.

    >>> parse_evidence(b"EEV0" + bytes(200))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    enclave.attestation.evidence.EvidenceError: the magic is not EEV2; this is not evidence ...
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("evidence must be bytes")
    reader = _Reader(bytes(data))
    magic, flags, measurement, svn, report_data, nonce_len = _HEADER.unpack(
        reader.take(_HEADER.size, "the fixed report header")
    )
    if magic == MAGIC_V1:
        raise _malformed(
            "this is evidence format v1, whose ECDH key signature has no domain-separation "
            "label; it is no longer accepted. Upgrade the enclave to one that sends format v2"
        )
    if magic != MAGIC:
        raise _malformed("the magic is not EEV2; this is not evidence format v2")
    if flags & ~KNOWN_FLAGS:
        raise _malformed(
            f"flags has unknown bits set (0x{flags & ~KNOWN_FLAGS:08x}); "
            "format v2 defines bit 0 only"
        )
    if not NONCE_MIN_LEN <= nonce_len <= NONCE_MAX_LEN:
        raise _malformed(
            f"nonce_len is {nonce_len}, outside {NONCE_MIN_LEN}..{NONCE_MAX_LEN}; "
            "the client must send a nonce of 16 to 256 bytes"
        )
    nonce = reader.take(nonce_len, "nonce")
    ecdh_public = reader.take(ECDH_PUBLIC_LEN, "ecdh_public")
    report = reader.data[: reader.offset]
    platform_signature = reader.take_u16_prefixed("platform_sig", 1, SIGNATURE_MAX_LEN)
    identity_der = reader.take_u16_prefixed("identity_public_key_der", 1, IDENTITY_MAX_LEN)
    ecdh_signature = reader.take_u16_prefixed("ecdh_sig", 1, SIGNATURE_MAX_LEN)
    if reader.offset != len(reader.data):
        raise _malformed(
            f"{len(reader.data) - reader.offset} bytes follow ecdh_sig; evidence v2 ends there"
        )
    load_identity_key(identity_der)
    load_ecdh_public(ecdh_public)
    return Evidence(
        report=report,
        flags=flags,
        measurement=measurement,
        svn=svn,
        report_data=report_data,
        nonce=nonce,
        ecdh_public=ecdh_public,
        platform_signature=platform_signature,
        identity_public_key_der=identity_der,
        ecdh_signature=ecdh_signature,
    )


def load_identity_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """The enclave identity key from its DER SubjectPublicKeyInfo; it must be ECDSA P-384.

    The algorithm identifier is compared before the DER goes to the key loader, so other key
    types (which can raise unsupported-algorithm errors or deprecation warnings) never reach it.
    """
    header_len = 2 if len(der) > 1 and der[1] < 0x80 else 3
    if der[:1] != b"\x30" or not der.startswith(_P384_ALGORITHM, header_len):
        raise _malformed(
            "identity_public_key_der is not an ECDSA P-384 public key "
            "(the SubjectPublicKeyInfo must name id-ecPublicKey with secp384r1)"
        )
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _malformed("identity_public_key_der is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise _malformed("identity_public_key_der is not an ECDSA P-384 public key")
    return key


def load_ecdh_public(point: bytes) -> ec.EllipticCurvePublicKey:
    """The enclave's ephemeral ECDH key from a 97-byte uncompressed SEC1 point on P-384."""
    if len(point) != ECDH_PUBLIC_LEN or point[:1] != b"\x04":
        raise _malformed("ecdh_public is not a 97-byte uncompressed SEC1 point (0x04 || X || Y)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), bytes(point))
    except ValueError:
        raise _malformed("ecdh_public is not a point on P-384") from None


def identity_hash(identity_public_key_der: bytes) -> bytes:
    """SHA-256 of the identity key's DER bytes as sent: the value `report_data` must hold.

    >>> identity_hash(b"").hex()[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(identity_public_key_der).digest()


def ecdh_signed_message(ecdh_public: bytes, nonce: bytes) -> bytes:
    """The bytes the identity key signs: ECDH_SIGNATURE_LABEL || ecdh_public || nonce.

    >>> message = ecdh_signed_message(b"\\x04" + bytes(96), b"n" * 16)
    >>> message[:23], message[-16:]
    (b'EnclaveSQL evidence v2\\x00', b'nnnnnnnnnnnnnnnn')
    """
    return ECDH_SIGNATURE_LABEL + bytes(ecdh_public) + bytes(nonce)


def verify_platform_signature(
    evidence: Evidence, trusted_keys: Iterable[ec.EllipticCurvePublicKey]
) -> ec.EllipticCurvePublicKey:
    """Check the report's signature against each trusted platform key; return the one that signed.

    Raises `EvidenceError("platform_signature", ..., 403)` when no trusted key verifies it.
    """
    for key in trusted_keys:
        try:
            key.verify(evidence.platform_signature, evidence.report, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            continue
        return key
    raise EvidenceError(
        "platform_signature",
        "the report is not signed by a trusted platform key; add the platform's public key to "
        "trusted_platform_keys if this platform should be trusted",
        403,
    )


def verify_identity_binding(evidence: Evidence) -> None:
    """Check report_data == SHA-256(identity key DER), in fixed time."""
    if not hmac.compare_digest(
        evidence.report_data, identity_hash(evidence.identity_public_key_der)
    ):
        raise EvidenceError(
            "identity_binding",
            "report_data is not the SHA-256 of the enclave identity key, so the identity key is "
            "not bound to this report",
            403,
        )


def verify_ecdh_signature(
    identity_public_key_der: bytes, ecdh_public: bytes, nonce: bytes, ecdh_signature: bytes
) -> None:
    """Check the identity key's ECDSA-P384-SHA384 signature over the labelled message of
    `ecdh_signed_message`; one made without the label, or with another, is refused."""
    identity_key = load_identity_key(identity_public_key_der)
    try:
        identity_key.verify(
            bytes(ecdh_signature),
            ecdh_signed_message(ecdh_public, nonce),
            ec.ECDSA(hashes.SHA384()),
        )
    except InvalidSignature:
        raise EvidenceError(
            "ecdh_signature",
            "the ECDH public key is not signed by the enclave identity key for this nonce",
            403,
        ) from None

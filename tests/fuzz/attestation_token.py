"""Fuzz target: the client's token verifier, `verify_attestation`, on raw or structured JWTs
(fuzzed alg, kid and embedded keys; valid or fuzzed claims; signed by the service, another
service, an attacker, an HMAC over the public key, or not at all).

Only `AttestationError` may escape, and an accepted token must verify under the service's key.
It must not talk to a service: the JWKS is built here from throwaway keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import atheris
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, HMACAlgorithm

from enclave.attestation.service import SigningKey
from engine.client.attestation import verify_attestation
from engine.errors import AttestationError
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

ISSUER = "https://attest.example"
NONCE = bytes(range(100, 132))
NOW = 1_800_000_000
SERVICE_KEY = SigningKey.generate()
OTHER_SERVICE_KEY = SigningKey.generate()
ATTACKER_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = {"keys": [SERVICE_KEY.jwk()]}
# The enclave's keys never touch a platform key here, so no platform directory is needed.
ENCLAVE = SimulatedEnclave(platform_dir=None)  # type: ignore[arg-type]
ECDH_SIGNATURE = ENCLAVE.ecdh_signature(NONCE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


VALID_CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "iat": NOW - 10,
    "nbf": NOW - 10,
    "exp": NOW + 290,
    "x-enclave-measurement": DEFAULT_MEASUREMENT.hex(),
    "x-enclave-svn": 1,
    "x-enclave-debug": False,
    "x-enclave-nonce": _b64url(NONCE),
    "x-enclave-identity-hash": hashlib.sha256(ENCLAVE.identity_public_key_der).hexdigest(),
}
ALGORITHMS = ("ES256", "ES384", "RS256", "HS256", "none", "None", "NONE", "PS256", "EdDSA", "")
_PUBLIC_PEM = SERVICE_KEY.private_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)
# How a structured token is signed.
SIGNERS = ("service", "other service", "attacker", "hmac with the public key", "none", "fuzz")


def _fuzzed_value(provider: atheris.FuzzedDataProvider) -> object:
    kind = provider.ConsumeIntInRange(0, 6)
    if kind == 0:
        return provider.ConsumeInt(8)
    if kind == 1:
        return provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 80))
    if kind == 2:
        return provider.ConsumeBool()
    if kind == 3:
        return None
    if kind == 4:
        return [provider.ConsumeInt(2)]
    if kind == 5:
        return provider.ConsumeFloat()
    return NOW + provider.ConsumeIntInRange(-400, 400)


def structured_token(provider: atheris.FuzzedDataProvider) -> str:
    """A JWT assembled from the recipe in `provider` (see the module docstring)."""
    header: dict[str, Any] = {"typ": "JWT"}
    algorithm = ALGORITHMS[provider.ConsumeIntInRange(0, len(ALGORITHMS) - 1)]
    header["alg"] = algorithm if provider.ConsumeIntInRange(0, 7) else _fuzzed_value(provider)
    kid_choice = provider.ConsumeIntInRange(0, 3)
    if kid_choice == 0:
        header["kid"] = SERVICE_KEY.kid
    elif kid_choice == 1:
        header["kid"] = OTHER_SERVICE_KEY.kid
    elif kid_choice == 2:
        header["kid"] = _fuzzed_value(provider)
    if provider.ConsumeIntInRange(0, 7) == 0:  # an embedded key must never be trusted
        header["jwk"] = OTHER_SERVICE_KEY.jwk()
    claims = dict(VALID_CLAIMS)
    for name in list(claims):
        action = provider.ConsumeIntInRange(0, 9)
        if action == 0:
            del claims[name]
        elif action == 1:
            claims[name] = _fuzzed_value(provider)
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    ).encode("ascii")
    signer = SIGNERS[provider.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    if signer == "service":
        signature = _ES256.sign(signing_input, SERVICE_KEY.private_key)
    elif signer == "other service":
        signature = _ES256.sign(signing_input, OTHER_SERVICE_KEY.private_key)
    elif signer == "attacker":
        signature = _ES256.sign(signing_input, ATTACKER_KEY)
    elif signer == "hmac with the public key":
        signature = _HS256.sign(signing_input, _PUBLIC_PEM)
    elif signer == "none":
        signature = b""
    else:
        signature = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 80))
    token = signing_input.decode("ascii") + "." + _b64url(signature)
    if provider.remaining_bytes() and provider.ConsumeIntInRange(0, 3) == 0:
        position = provider.ConsumeIntInRange(0, len(token) - 1)
        token = token[:position] + chr(provider.ConsumeIntInRange(32, 126)) + token[position + 1 :]
    return token


def token_from(data: bytes) -> str:
    """The token an input stands for: first byte even, the rest as text; odd, a recipe.

    >>> token_from(b"\\x00a.b.c")
    'a.b.c'
    >>> token_from(b"\\x01").count(".")
    2
    """
    if not data or not data[0] & 1:
        return data[1:].decode("utf-8", errors="replace")
    return structured_token(atheris.FuzzedDataProvider(data[1:]))


def seeds() -> Iterable[bytes]:
    return [b"\x00a.b.c", b"\x00eyJhbGciOiJub25lIn0.e30.", b"\x01", b"\x01" + bytes(range(64))]


def test_one_input(data: bytes) -> None:
    """Verify a fuzzed token; only AttestationError may escape.

    >>> test_one_input(b"\\x00not a token")
    """
    token = token_from(data)
    try:
        verified = verify_attestation(
            token,
            JWKS,
            issuer=ISSUER,
            nonce=NONCE,
            identity_public_key_der=ENCLAVE.identity_public_key_der,
            ecdh_public=ENCLAVE.ecdh_public,
            ecdh_signature=ECDH_SIGNATURE,
            expected_measurements=[DEFAULT_MEASUREMENT.hex()],
            now=NOW,
        )
    except AttestationError:
        return
    # Only the service's key can have signed an accepted token; check that independently.
    jwt.PyJWS().decode_complete(
        token, key=SERVICE_KEY.private_key.public_key(), algorithms=[SERVICE_KEY.algorithm]
    )
    assert verified.measurement == DEFAULT_MEASUREMENT.hex()
    assert verified.ecdh_public == ENCLAVE.ecdh_public

"""Token-level attacks on the client's verifier, beyond tests/unit/test_attestation_client.py:
HS256 keyed with the public key, `none` in any spelling, keys smuggled in the token header,
kids of other key sets, JWKS entries without `alg`, signature transplants, and a signed token
whose expiry no clock can hold. Tokens are signed here with a SigningKey, as the service would.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, HMACAlgorithm

from enclave.attestation.service import SigningKey
from engine.client.attestation import verify_attestation
from engine.errors import AttestationError
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

ISSUER = "https://attest.example"
NONCE = bytes(range(50, 82))
NOW = 1_800_000_000
SERVICE = SigningKey.generate()
OTHER_SERVICE = SigningKey.generate()
ENCLAVE = SimulatedEnclave(platform_dir=None)  # type: ignore[arg-type]  # no evidence made here


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "iat": NOW - 5,
        "nbf": NOW - 5,
        "exp": NOW + 295,
        "x-enclave-measurement": DEFAULT_MEASUREMENT.hex(),
        "x-enclave-svn": 1,
        "x-enclave-debug": False,
        "x-enclave-nonce": _b64url(NONCE),
        "x-enclave-identity-hash": hashlib.sha256(ENCLAVE.identity_public_key_der).hexdigest(),
    }
    claims.update(changes)
    return claims


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    ).encode("ascii")


def _token(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    return _unsigned(header, claims).decode("ascii") + "." + _b64url(signature)


def _service_token(claims: dict[str, Any] | None = None, key: SigningKey = SERVICE) -> str:
    header = {"alg": key.algorithm, "typ": "JWT", "kid": key.kid}
    claims = _claims() if claims is None else claims
    return _token(
        header,
        claims,
        ECAlgorithm(ECAlgorithm.SHA256).sign(_unsigned(header, claims), key.private_key),
    )


def _verify(token: str, jwks: dict[str, Any] | None = None) -> object:
    return verify_attestation(
        token,
        {"keys": [SERVICE.jwk()]} if jwks is None else jwks,
        issuer=ISSUER,
        nonce=NONCE,
        identity_public_key_der=ENCLAVE.identity_public_key_der,
        ecdh_public=ENCLAVE.ecdh_public,
        ecdh_signature=ENCLAVE.ecdh_signature(NONCE),
        expected_measurements=[DEFAULT_MEASUREMENT.hex()],
        now=NOW,
    )


CHECK_1 = r"attestation check 1 \(token signature\) failed"


def test_the_baseline_token_verifies() -> None:
    # Every attack below starts from this token, so it must pass untouched.
    assert _verify(_service_token()) is not None


def _public_key_forms() -> dict[str, bytes]:
    public = SERVICE.private_key.public_key()
    return {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "point": public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        "jwk json": json.dumps(SERVICE.jwk()).encode(),
    }


@pytest.mark.parametrize("form", sorted(_public_key_forms()))
def test_hmac_keyed_with_the_services_public_key_is_refused(form: str) -> None:
    # The classic confusion: a verifier that let the token pick HS256 would use the public key,
    # which everyone has, as the HMAC secret.
    header = {"alg": "HS256", "typ": "JWT", "kid": SERVICE.kid}
    secret = _public_key_forms()[form]
    signature = HMACAlgorithm(HMACAlgorithm.SHA256).sign(_unsigned(header, _claims()), secret)
    with pytest.raises(AttestationError, match=CHECK_1 + ".*algorithm"):
        _verify(_token(header, _claims(), signature))


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", "nOnE", "", None])
def test_unsigned_tokens_are_refused_in_any_spelling(spelling: str | None) -> None:
    header = {"alg": spelling, "typ": "JWT", "kid": SERVICE.kid}
    with pytest.raises(AttestationError, match=CHECK_1):
        _verify(_token(header, _claims(), b""))


@pytest.mark.parametrize("header_member", ["jwk", "jku", "x5u", "x5c"])
def test_a_key_named_in_the_token_header_is_never_trusted(header_member: str) -> None:
    # The attacker signs with their own key and points at it from the header, keeping our kid.
    attacker = SigningKey.generate()
    carried: object = {
        "jwk": attacker.jwk(),
        "jku": "https://attacker.example/certs",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    }[header_member]
    for kid in (SERVICE.kid, attacker.kid):
        header = {"alg": "ES256", "typ": "JWT", "kid": kid, header_member: carried}
        signature = ECAlgorithm(ECAlgorithm.SHA256).sign(
            _unsigned(header, _claims()), attacker.private_key
        )
        with pytest.raises(AttestationError, match=CHECK_1):
            _verify(_token(header, _claims(), signature))


def test_a_kid_from_another_key_set_is_refused_even_when_both_sets_are_known() -> None:
    # The client trusts service A's JWKS only; service B's genuine token names B's key.
    with pytest.raises(AttestationError, match=CHECK_1 + ".*kid"):
        _verify(_service_token(key=OTHER_SERVICE))
    # B's token relabelled with A's kid does not verify under A's key.
    claims = _claims()
    header = {"alg": "ES256", "typ": "JWT", "kid": SERVICE.kid}
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(
        _unsigned(header, claims), OTHER_SERVICE.private_key
    )
    with pytest.raises(AttestationError, match=CHECK_1 + ".*does not verify"):
        _verify(_token(header, claims, signature))


@pytest.mark.parametrize("kid", [123, ["a"], {"kid": "x"}, None, ""])
def test_a_kid_of_the_wrong_type_is_refused(kid: object) -> None:
    header = {"alg": "ES256", "typ": "JWT", "kid": kid}
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(
        _unsigned(header, _claims()), SERVICE.private_key
    )
    # PyJWT already calls a non-string kid malformed; either way check 1 refuses it.
    with pytest.raises(AttestationError, match=CHECK_1):
        _verify(_token(header, _claims(), signature))


@pytest.mark.parametrize("algorithm", ["RS256", "ES384"])
def test_a_jwks_without_alg_members_still_binds_the_algorithm_to_the_key_type(
    algorithm: str,
) -> None:
    # Some services publish JWKs without "alg"; the token must still not pick an algorithm
    # that does not fit the key. An attacker's P-384 signature claims ES384 under our P-256 kid.
    jwks = {"keys": [{k: v for k, v in SERVICE.jwk().items() if k != "alg"}]}
    assert _verify(_service_token(), jwks) is not None
    header = {"alg": algorithm, "typ": "JWT", "kid": SERVICE.kid}
    attacker = ec.generate_private_key(ec.SECP384R1())
    signature = ECAlgorithm(ECAlgorithm.SHA384).sign(_unsigned(header, _claims()), attacker)
    with pytest.raises(AttestationError, match=CHECK_1):
        _verify(_token(header, _claims(), signature), jwks)


@pytest.mark.parametrize(
    "changes",
    [
        {"x-enclave-nonce": _b64url(bytes(32))},
        {"x-enclave-measurement": "00" * 32},
        {"exp": NOW + 10**6},
        {"x-enclave-debug": True},
    ],
    ids=["nonce", "measurement", "exp", "debug"],
)
def test_a_genuine_signature_moved_onto_changed_claims_is_refused(changes: dict[str, Any]) -> None:
    genuine = _service_token()
    signature = genuine.rsplit(".", 1)[1]
    header_part = genuine.split(".")[0]
    forged = f"{header_part}.{_b64url(json.dumps(_claims(**changes)).encode())}.{signature}"
    with pytest.raises(AttestationError, match=CHECK_1 + ".*does not verify"):
        _verify(forged)


@pytest.mark.parametrize("exp", [2**62, 10**20, -(2**62)])
def test_a_signed_token_with_an_unrepresentable_expiry_fails_check_2(exp: int) -> None:
    # Found by the token fuzz target: this used to escape as OSError or OverflowError.
    with pytest.raises(AttestationError, match=r"attestation check 2 \(token lifetime\)"):
        _verify(_service_token(_claims(exp=exp)))


def test_a_duplicated_alg_member_cannot_switch_the_algorithm_off() -> None:
    # JSON objects with a repeated name keep the last value in Python; here that is "none".
    header_json = '{"alg":"ES256","typ":"JWT","kid":"' + SERVICE.kid + '","alg":"none"}'
    unsigned = _b64url(header_json.encode()) + "." + _b64url(json.dumps(_claims()).encode())
    with pytest.raises(AttestationError, match=CHECK_1):
        _verify(unsigned + ".")


def test_pyjwt_alone_would_accept_what_check_1_refuses() -> None:
    # Shows the HS256 test above is not vacuous: a naive verifier that trusts the header's
    # algorithm accepts the confused token.
    header = {"alg": "HS256", "typ": "JWT"}
    secret = _public_key_forms()["point"]
    signature = HMACAlgorithm(HMACAlgorithm.SHA256).sign(_unsigned(header, _claims()), secret)
    token = _token(header, _claims(), signature)
    assert jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    with pytest.raises(AttestationError, match=CHECK_1):
        _verify(token)

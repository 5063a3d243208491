"""The client's attestation verifier: fetches the service's keys, gets a token, checks it all.

`AttestationClient` talks to the attestation service; `verify_attestation` runs the seven checks
of docs/attestation.md in order and raises `AttestationError` naming the first that fails. It must
not trust anything the host relays without checking it, and no message carries key or nonce bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from enclave.attestation.evidence import EvidenceError, parse_evidence, verify_ecdh_signature
from engine.errors import AttestationError

# Asymmetric algorithms only: `none` and the HMAC family would let anyone who sees the JWKS, or
# nobody at all, mint tokens.
ALLOWED_ALGORITHMS = ("ES256", "ES384", "RS256")
CLAIM_MEASUREMENT = "x-enclave-measurement"
CLAIM_SVN = "x-enclave-svn"
CLAIM_DEBUG = "x-enclave-debug"
CLAIM_NONCE = "x-enclave-nonce"
CLAIM_IDENTITY_HASH = "x-enclave-identity-hash"
# The checks in the order they run; messages name them with these words.
CHECKS = (
    "token signature",
    "token lifetime",
    "issuer",
    "nonce",
    "enclave policy",
    "identity binding",
    "ECDH key signature",
)
MAX_RESPONSE_LEN = 1 << 20
_DECODE_OPTIONS: Any = {
    # Only the signature is checked inside PyJWT; every other check is ours, explicit and in order.
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


@dataclass(frozen=True)
class VerifiedEnclave:
    """What a verified token and key binding prove about the enclave."""

    measurement: str
    svn: int
    debug: bool
    expires_at: datetime
    ecdh_public: bytes


def _failed(check: str, reason: str) -> AttestationError:
    number = CHECKS.index(check) + 1
    return AttestationError(f"attestation check {number} ({check}) failed: {reason}")


def verify_attestation(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    nonce: bytes,
    identity_public_key_der: bytes,
    ecdh_public: bytes,
    ecdh_signature: bytes,
    expected_measurements: Iterable[str] | None = None,
    min_svn: int = 0,
    allow_debug: bool = False,
    now: datetime | float | None = None,
) -> VerifiedEnclave:
    """Verify an attestation token and the enclave's key binding; raise on the first failure.

    The checks, in order: (1) token signature against `jwks`, (2) expiry and not-before,
    (3) issuer, (4) nonce, (5) measurement, svn and debug against the client's own limits,
    (6) SHA-256(identity key) equals the token's identity hash, (7) the identity key's signature
    over the evidence label || ecdh_public || nonce. `expected_measurements` are hex SHA-256 values.

    >>> verify_attestation("not-a-jwt", {"keys": []}, issuer="http://x", nonce=bytes(16),
    ...     identity_public_key_der=b"", ecdh_public=b"", ecdh_signature=b"")
    Traceback (most recent call last):
    ...
    engine.errors.AttestationError: attestation check 1 (token signature) failed: the token is \
not a well-formed JWT
    """
    claims = _verified_claims(token, jwks)
    moment = _timestamp(now)
    expires_at, not_before = _claim_int(claims, "exp"), _claim_int(claims, "nbf")
    try:
        expiry = datetime.fromtimestamp(expires_at, UTC)
    except (OverflowError, OSError, ValueError):
        # Found by tests/fuzz: a signed token may still carry an exp no datetime can hold.
        raise _failed(
            "token lifetime", "the token's exp claim is not a representable time"
        ) from None
    if moment >= expires_at:
        raise _failed("token lifetime", "the token has expired; attest the enclave again")
    if moment < not_before:
        raise _failed(
            "token lifetime", "the token is not valid yet (nbf); check the clocks of both machines"
        )
    if claims.get("iss") != issuer:
        raise _failed(
            "issuer",
            "the token was issued by a different attestation service than the one configured",
        )
    token_nonce = _claim_b64url(claims, CLAIM_NONCE, "nonce")
    if not hmac.compare_digest(token_nonce, bytes(nonce)):
        raise _failed("nonce", "the token is for a different nonce, so it is not fresh")
    measurement = claims.get(CLAIM_MEASUREMENT)
    svn = claims.get(CLAIM_SVN)
    debug = claims.get(CLAIM_DEBUG)
    if not isinstance(measurement, str) or isinstance(svn, bool) or not isinstance(svn, int):
        raise _failed("enclave policy", "the token lacks the measurement or svn claim")
    if not isinstance(debug, bool):
        raise _failed("enclave policy", "the token lacks the debug claim")
    if expected_measurements is not None:
        if isinstance(expected_measurements, str):
            expected_measurements = (expected_measurements,)
        expected = {value.lower() for value in expected_measurements}
        if measurement.lower() not in expected:
            raise _failed(
                "enclave policy",
                "the enclave measurement is not one of the client's expected measurements",
            )
    if svn < min_svn:
        raise _failed(
            "enclave policy", f"the enclave svn {svn} is below the client's minimum {min_svn}"
        )
    if debug and not allow_debug:
        raise _failed(
            "enclave policy", "the enclave is a debug build; the client does not allow debug"
        )
    identity_hash = claims.get(CLAIM_IDENTITY_HASH)
    if not isinstance(identity_hash, str):
        raise _failed("identity binding", "the token lacks the identity hash claim")
    actual_hash = hashlib.sha256(bytes(identity_public_key_der)).hexdigest()
    if not hmac.compare_digest(actual_hash.encode(), identity_hash.lower().encode("utf-8")):
        raise _failed(
            "identity binding",
            "the enclave identity key is not the one the attestation service saw",
        )
    try:
        verify_ecdh_signature(identity_public_key_der, ecdh_public, nonce, ecdh_signature)
    except EvidenceError as error:
        raise _failed("ECDH key signature", error.reason) from None
    return VerifiedEnclave(
        measurement=measurement.lower(),
        svn=svn,
        debug=debug,
        expires_at=expiry,
        ecdh_public=bytes(ecdh_public),
    )


def _verified_claims(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _failed("token signature", "the token is not a well-formed JWT") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise _failed(
            "token signature",
            f"the token algorithm {str(algorithm)[:16]!r} is not one of "
            f"{', '.join(ALLOWED_ALGORITHMS)}",
        )
    jwk = find_jwk(jwks, kid)
    if jwk is None:
        raise _failed("token signature", "the token's kid is not in the attestation service's JWKS")
    if jwk.get("alg", algorithm) != algorithm:
        # Without this a token could pick the algorithm its key is checked with.
        raise _failed("token signature", "the token algorithm differs from its key's algorithm")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=algorithm)
        claims = jwt.decode(
            token, key=key, algorithms=list(ALLOWED_ALGORITHMS), options=_DECODE_OPTIONS
        )
    except jwt.InvalidSignatureError:
        raise _failed(
            "token signature", "the token signature does not verify with the service's key"
        ) from None
    except jwt.PyJWTError as error:
        raise _failed(
            "token signature", f"the token cannot be verified ({type(error).__name__})"
        ) from None
    if not isinstance(claims, dict):
        raise _failed("token signature", "the token payload is not a JSON object")
    return claims


def find_jwk(jwks: Mapping[str, Any], kid: object) -> Mapping[str, Any] | None:
    """The JWK with this `kid`, or None.

    >>> find_jwk({"keys": [{"kid": "a", "kty": "EC"}]}, "a")
    {'kid': 'a', 'kty': 'EC'}
    """
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(kid, str) or not isinstance(keys, list):
        return None
    for candidate in keys:
        if isinstance(candidate, Mapping) and candidate.get("kid") == kid:
            return candidate
    return None


def _timestamp(now: datetime | float | None) -> float:
    if now is None:
        return datetime.now(UTC).timestamp()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)


def _claim_int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _failed("token lifetime", f"the token has no integer {name} claim")
    return value


def _claim_b64url(claims: Mapping[str, Any], name: str, check: str) -> bytes:
    value = claims.get(name)
    if not isinstance(value, str):
        raise _failed(check, f"the token has no {name} claim")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        raise _failed(check, f"the {name} claim is not base64url") from None


class AttestationClient:
    """A client of one attestation service; it caches the discovery document and the JWKS.

    Every network failure, timeout or refusal raises `AttestationError` within `timeout` seconds
    per network operation (connect, send, each read).
    """

    def __init__(self, url: str, *, timeout: float = 5.0, issuer: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.issuer = issuer if issuer is not None else self.url
        self._configuration: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def configuration(self) -> dict[str, Any]:
        """The service's openid-configuration, fetched once; its issuer must be the expected one."""
        if self._configuration is None:
            answer = self._request("GET", self.url + "/.well-known/openid-configuration")
            if not isinstance(answer.get("issuer"), str) or not isinstance(
                answer.get("jwks_uri"), str
            ):
                raise AttestationError(
                    "the attestation service's openid-configuration lacks issuer or jwks_uri"
                )
            if answer["issuer"] != self.issuer:
                raise AttestationError(
                    f"the attestation service names itself {answer['issuer']!r}, not the "
                    f"expected issuer {self.issuer!r}; pass issuer= if that is intended"
                )
            if not answer["jwks_uri"].startswith(("http://", "https://")):
                raise AttestationError("the attestation service's jwks_uri is not an http(s) URL")
            self._configuration = answer
        return self._configuration

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        """The service's JWKS, fetched once (again when `refresh`)."""
        if self._jwks is None or refresh:
            answer = self._request("GET", self.configuration()["jwks_uri"])
            if not isinstance(answer.get("keys"), list):
                raise AttestationError("the attestation service's JWKS has no keys list")
            self._jwks = answer
        return self._jwks

    def jwks_for(self, token: str) -> dict[str, Any]:
        """The JWKS to check `token` with, refetched once if its kid is not in the cached set."""
        jwks = self.jwks()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return jwks
        if find_jwk(jwks, kid) is None:
            jwks = self.jwks(refresh=True)
        return jwks

    def attest(self, evidence: bytes) -> str:
        """Send evidence to `POST /attest` and return the token (not yet verified)."""
        self.configuration()
        encoded = base64.urlsafe_b64encode(bytes(evidence)).rstrip(b"=").decode("ascii")
        answer = self._request("POST", self.url + "/attest", {"evidence": encoded})
        token = answer.get("token")
        if not isinstance(token, str):
            raise AttestationError("the attestation service answered without a token")
        return token

    def verify_evidence(
        self,
        evidence: bytes,
        *,
        nonce: bytes,
        expected_measurements: Iterable[str] | None = None,
        min_svn: int = 0,
        allow_debug: bool = False,
    ) -> VerifiedEnclave:
        """Attest `evidence` and verify the token and key binding: the whole client side."""
        try:
            parsed = parse_evidence(evidence)
        except EvidenceError as error:
            raise AttestationError(f"the enclave's evidence is malformed: {error.reason}") from None
        token = self.attest(evidence)
        return verify_attestation(
            token,
            self.jwks_for(token),
            issuer=self.issuer,
            nonce=nonce,
            identity_public_key_der=parsed.identity_public_key_der,
            ecdh_public=parsed.ecdh_public,
            ecdh_signature=parsed.ecdh_signature,
            expected_measurements=expected_measurements,
            min_svn=min_svn,
            allow_debug=allow_debug,
        )

    def _request(
        self, method: str, url: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read(MAX_RESPONSE_LEN + 1)
        except urllib.error.HTTPError as error:
            raise AttestationError(self._refusal(error)) from None
        except TimeoutError:
            raise AttestationError(
                f"the attestation service at {self.url} did not answer within {self.timeout} s"
            ) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise AttestationError(
                    f"the attestation service at {self.url} did not answer within {self.timeout} s"
                ) from None
            raise AttestationError(
                f"cannot reach the attestation service at {self.url}: {reason}; is it running?"
            ) from None
        except (OSError, ValueError) as error:
            raise AttestationError(
                f"the connection to the attestation service at {self.url} failed: "
                f"{type(error).__name__}"
            ) from None
        if len(payload) > MAX_RESPONSE_LEN:
            raise AttestationError("the attestation service's answer is too large")
        try:
            answer = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise AttestationError("the attestation service's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise AttestationError("the attestation service's answer is not a JSON object")
        return answer

    def _refusal(self, error: urllib.error.HTTPError) -> str:
        try:
            with error:
                answer = json.loads(error.read(MAX_RESPONSE_LEN))
            code, reason = answer["error"], answer["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"the attestation service answered HTTP {error.code} without an explanation"
        return (
            f"the attestation service refused (HTTP {error.code}, {str(code)[:40]}): "
            f"{str(reason)[:300]}"
        )

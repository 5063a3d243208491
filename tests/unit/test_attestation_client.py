"""The client verifier: each of the seven checks fails alone and is named, in order; the happy
path ends in equal session keys; a down or silent service fails within the timeout."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.attestation.policy import Policy
from enclave.attestation.service import SigningKey, start_in_thread
from engine.client.attestation import (
    AttestationClient,
    VerifiedEnclave,
    verify_attestation,
)
from engine.client.session_key import derive_session_key, new_client_ecdh_key
from engine.errors import AttestationError, InterfaceError, OperationalError
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

NONCE = bytes(range(200, 232))


def _policy(platform_dir: Path, **overrides: object) -> Policy:
    data: dict[str, object] = {"allowed_measurements": [DEFAULT_MEASUREMENT.hex()]}
    data.update(overrides)
    return Policy.from_mapping(data, platform_dir=platform_dir)


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def enclave(platform_dir: Path) -> SimulatedEnclave:
    return SimulatedEnclave(platform_dir)


@pytest.fixture(scope="module")
def service_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def service(platform_dir: Path, service_log: io.StringIO) -> Iterator[str]:
    url, stop = start_in_thread(_policy(platform_dir, allow_debug=True), log=service_log)
    yield url
    stop()


@pytest.fixture(scope="module")
def client(service: str) -> AttestationClient:
    return AttestationClient(service, timeout=5.0)


@pytest.fixture(scope="module")
def token(client: AttestationClient, enclave: SimulatedEnclave) -> str:
    return client.attest(enclave.evidence(NONCE))


def _verify(
    token: str, client: AttestationClient, enclave: SimulatedEnclave, **overrides: Any
) -> VerifiedEnclave:
    arguments: dict[str, Any] = {
        "issuer": client.issuer,
        "nonce": NONCE,
        "identity_public_key_der": enclave.identity_public_key_der,
        "ecdh_public": enclave.ecdh_public,
        "ecdh_signature": enclave.ecdh_signature(NONCE),
    }
    arguments.update(overrides)
    return verify_attestation(token, client.jwks(), **arguments)


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _forge(claims: dict[str, Any], key: Any, algorithm: str, kid: str | None) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


# --- the happy path -----------------------------------------------------------------------------


def test_valid_evidence_ends_in_equal_session_keys(
    client: AttestationClient, enclave: SimulatedEnclave
) -> None:
    verified = client.verify_evidence(
        enclave.evidence(NONCE),
        nonce=NONCE,
        expected_measurements=[DEFAULT_MEASUREMENT.hex().upper()],
        min_svn=1,
    )
    assert verified.measurement == DEFAULT_MEASUREMENT.hex()
    assert (verified.svn, verified.debug) == (1, False)
    assert verified.ecdh_public == enclave.ecdh_public
    assert 0 < verified.expires_at.timestamp() - time.time() <= 300
    client_key = new_client_ecdh_key()
    session_key = derive_session_key(client_key, verified.ecdh_public)
    client_point = client_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert isinstance(session_key, bytearray) and len(session_key) == 32
    assert bytes(session_key) == enclave.session_key(client_point)


def test_session_keys_differ_per_client_key(enclave: SimulatedEnclave) -> None:
    first = derive_session_key(new_client_ecdh_key(), enclave.ecdh_public)
    second = derive_session_key(new_client_ecdh_key(), enclave.ecdh_public)
    assert first != second


def test_session_key_refuses_bad_inputs(enclave: SimulatedEnclave) -> None:
    with pytest.raises(AttestationError, match="uncompressed"):
        derive_session_key(new_client_ecdh_key(), enclave.ecdh_public[:49])
    with pytest.raises(AttestationError, match="not a point"):
        derive_session_key(new_client_ecdh_key(), b"\x04" + bytes(96))
    with pytest.raises(InterfaceError, match="P-384"):
        derive_session_key(ec.generate_private_key(ec.SECP256R1()), enclave.ecdh_public)


# --- each check alone, named --------------------------------------------------------------------


def _check(number: int, name: str) -> str:
    return rf"attestation check {number} \({name}\) failed"


def test_check_1_token_from_another_service(
    platform_dir: Path, client: AttestationClient, enclave: SimulatedEnclave
) -> None:
    url, stop = start_in_thread(_policy(platform_dir))
    try:
        foreign = AttestationClient(url).attest(enclave.evidence(NONCE))
    finally:
        stop()
    with pytest.raises(AttestationError, match=_check(1, "token signature") + ".*kid"):
        _verify(foreign, client, enclave)


def test_check_1_forged_token_with_a_spoofed_kid(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    kid = jwt.get_unverified_header(token)["kid"]
    forged = _forge(_claims(token), ec.generate_private_key(ec.SECP256R1()), "ES256", kid)
    with pytest.raises(AttestationError, match=_check(1, "token signature") + ".*does not verify"):
        _verify(forged, client, enclave)


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_check_1_unsigned_or_symmetric_tokens(
    client: AttestationClient, enclave: SimulatedEnclave, token: str, algorithm: str
) -> None:
    kid = jwt.get_unverified_header(token)["kid"]
    key = None if algorithm == "none" else b"k" * 32
    forged = _forge(_claims(token), key, algorithm, kid)
    with pytest.raises(AttestationError, match=_check(1, "token signature") + ".*algorithm"):
        _verify(forged, client, enclave)


def test_check_1_algorithm_must_match_the_jwk(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    # The JWKS key is ES256; a token claiming ES384 under its kid is refused, whoever signed it.
    kid = jwt.get_unverified_header(token)["kid"]
    forged = _forge(_claims(token), ec.generate_private_key(ec.SECP384R1()), "ES384", kid)
    with pytest.raises(AttestationError, match=_check(1, "token signature") + ".*differs"):
        _verify(forged, client, enclave)


def test_check_1_garbage(client: AttestationClient, enclave: SimulatedEnclave) -> None:
    with pytest.raises(AttestationError, match=_check(1, "token signature")):
        _verify("a.b.c", client, enclave)


def test_check_2_expired_token(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    expiry = _claims(token)["exp"]
    assert _verify(token, client, enclave, now=expiry - 1).svn == 1
    with pytest.raises(AttestationError, match=_check(2, "token lifetime") + ".*expired"):
        _verify(token, client, enclave, now=expiry)
    moment = datetime.fromtimestamp(expiry + 60, UTC)
    with pytest.raises(AttestationError, match=_check(2, "token lifetime") + ".*expired"):
        _verify(token, client, enclave, now=moment)


def test_check_2_one_second_lifetime(platform_dir: Path, enclave: SimulatedEnclave) -> None:
    url, stop = start_in_thread(_policy(platform_dir), token_lifetime=1)
    try:
        short_client = AttestationClient(url)
        short = short_client.attest(enclave.evidence(NONCE))
        claims = _claims(short)
        assert claims["exp"] - claims["iat"] == 1
        with pytest.raises(AttestationError, match=_check(2, "token lifetime")):
            _verify(short, short_client, enclave, now=claims["iat"] + 1)
    finally:
        stop()


def test_check_2_not_yet_valid(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    not_before = _claims(token)["nbf"]
    with pytest.raises(AttestationError, match=_check(2, "token lifetime") + ".*nbf"):
        _verify(token, client, enclave, now=not_before - 1)


def test_check_3_issuer(client: AttestationClient, enclave: SimulatedEnclave, token: str) -> None:
    with pytest.raises(AttestationError, match=_check(3, "issuer")):
        _verify(token, client, enclave, issuer="http://127.0.0.1:1")


def test_check_4_wrong_nonce(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    other = bytes(32)
    with pytest.raises(AttestationError, match=_check(4, "nonce")) as caught:
        _verify(token, client, enclave, nonce=other, ecdh_signature=enclave.ecdh_signature(other))
    assert NONCE.hex()[:8] not in str(caught.value)


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"expected_measurements": ["00" * 32]}, "expected measurements"),
        ({"min_svn": 2}, "below the client's minimum 2"),
    ],
    ids=["measurement", "svn"],
)
def test_check_5_client_limits(
    client: AttestationClient,
    enclave: SimulatedEnclave,
    token: str,
    limits: dict[str, Any],
    fragment: str,
) -> None:
    with pytest.raises(AttestationError, match=_check(5, "enclave policy") + ".*" + fragment):
        _verify(token, client, enclave, **limits)


def test_check_5_debug_enclave_needs_the_clients_consent(
    platform_dir: Path, client: AttestationClient
) -> None:
    debug_enclave = SimulatedEnclave(platform_dir, debug=True)
    debug_token = client.attest(debug_enclave.evidence(NONCE))
    with pytest.raises(AttestationError, match=_check(5, "enclave policy") + ".*debug"):
        _verify(debug_token, client, debug_enclave)
    assert _verify(debug_token, client, debug_enclave, allow_debug=True).debug is True


def test_check_6_identity_key_of_another_enclave(
    platform_dir: Path, client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    other = SimulatedEnclave(platform_dir)
    with pytest.raises(AttestationError, match=_check(6, "identity binding")):
        _verify(
            token,
            client,
            enclave,
            identity_public_key_der=other.identity_public_key_der,
            ecdh_public=other.ecdh_public,
            ecdh_signature=other.ecdh_signature(NONCE),
        )


def test_check_7_swapped_ecdh_key(
    platform_dir: Path, client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    # Enclave A's identity (bound by the token) with enclave B's ECDH key and B's signature.
    other = SimulatedEnclave(platform_dir)
    with pytest.raises(AttestationError, match=_check(7, "ECDH key signature")):
        _verify(
            token,
            client,
            enclave,
            ecdh_public=other.ecdh_public,
            ecdh_signature=other.ecdh_signature(NONCE),
        )


def test_check_7_signature_for_another_nonce(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    with pytest.raises(AttestationError, match=_check(7, "ECDH key signature")):
        _verify(token, client, enclave, ecdh_signature=enclave.ecdh_signature(bytes(32)))


# Labels that must not pass as format v2's: none (format v1's message), v1's suggested label,
# v2's without its NUL, and a label for another purpose.
WRONG_LABELS = [
    b"",
    b"EnclaveSQL evidence v1\x00",
    b"EnclaveSQL evidence v2",
    b"EnclaveSQL something else v2\x00",
]


@pytest.mark.parametrize("label", WRONG_LABELS)
def test_check_7_signature_without_the_domain_label(
    client: AttestationClient, enclave: SimulatedEnclave, token: str, label: bytes
) -> None:
    # The identity key did sign this ECDH key and nonce, but not as an evidence key binding.
    with pytest.raises(AttestationError, match=_check(7, "ECDH key signature")):
        _verify(token, client, enclave, ecdh_signature=enclave.ecdh_signature(NONCE, label))


@pytest.mark.parametrize("label", WRONG_LABELS)
def test_the_service_refuses_evidence_signed_without_the_domain_label(
    client: AttestationClient, enclave: SimulatedEnclave, label: bytes
) -> None:
    with pytest.raises(AttestationError, match="ecdh_signature"):
        client.attest(enclave.evidence(NONCE, ecdh_label=label))


def test_evidence_format_v1_is_refused_by_name(
    client: AttestationClient, enclave: SimulatedEnclave
) -> None:
    with pytest.raises(AttestationError, match="format v1"):
        client.attest(enclave.evidence(NONCE, magic=b"EEV1", ecdh_label=b""))


def test_checks_run_in_order(
    platform_dir: Path, client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    other = SimulatedEnclave(platform_dir)
    broken: dict[str, Any] = {
        "issuer": "http://elsewhere",
        "nonce": bytes(32),
        "min_svn": 9,
        "identity_public_key_der": other.identity_public_key_der,
        "now": _claims(token)["exp"] + 1,
    }
    # Remove one fault at a time: the reported check moves to the next one still broken.
    expected = [(2, "token lifetime"), (3, "issuer"), (4, "nonce"), (5, "enclave policy")]
    for (number, name), fault in zip(expected, ["now", "issuer", "nonce", "min_svn"], strict=True):
        with pytest.raises(AttestationError, match=_check(number, name)):
            _verify(token, client, enclave, **broken)
        del broken[fault]
    with pytest.raises(AttestationError, match=_check(6, "identity binding")):
        _verify(token, client, enclave, **broken)


# --- the service refuses: the client says why ---------------------------------------------------


def test_refusal_carries_the_services_reason(
    client: AttestationClient, enclave: SimulatedEnclave
) -> None:
    with pytest.raises(AttestationError, match=r"HTTP 403, measurement\).*allowed_measurements"):
        client.attest(enclave.evidence(NONCE, measurement=bytes(32)))
    with pytest.raises(AttestationError, match=r"HTTP 403, platform_signature"):
        client.attest(enclave.evidence(NONCE, platform_key=ec.generate_private_key(ec.SECP384R1())))


def test_malformed_evidence_is_refused_before_it_is_sent(
    client: AttestationClient, enclave: SimulatedEnclave, service_log: io.StringIO
) -> None:
    before = service_log.getvalue().count("POST /attest")
    with pytest.raises(AttestationError, match="malformed"):
        client.verify_evidence(enclave.evidence(NONCE)[:-1], nonce=NONCE)
    assert service_log.getvalue().count("POST /attest") == before


# --- the JWKS cache -----------------------------------------------------------------------------


def test_jwks_is_cached_and_refetched_once_for_an_unknown_kid(
    service: str, service_log: io.StringIO, token: str
) -> None:
    fresh = AttestationClient(service)

    def fetches() -> int:
        return service_log.getvalue().count("GET /certs")

    start = fetches()
    fresh.jwks()
    fresh.jwks()
    assert fetches() == start + 1
    assert fresh.jwks_for(token) is fresh.jwks()
    assert fetches() == start + 1
    stranger = _forge({"x": 1}, ec.generate_private_key(ec.SECP256R1()), "ES256", "unknown-kid")
    fresh.jwks_for(stranger)
    assert fetches() == start + 2


def test_discovery_issuer_must_match(service: str) -> None:
    with pytest.raises(AttestationError, match="not the expected issuer"):
        AttestationClient(service, issuer="https://attest.example").configuration()


# --- down, silent -------------------------------------------------------------------------------


def test_service_down_is_an_attestation_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is now closed: connecting is refused.
    with pytest.raises(AttestationError, match="cannot reach the attestation service") as caught:
        AttestationClient(f"http://127.0.0.1:{port}", timeout=2.0).attest(b"x")
    assert isinstance(caught.value, OperationalError)


def test_silent_service_times_out() -> None:
    with socket.socket() as listener:
        # It listens and the kernel completes the handshake, but nobody ever accepts or answers.
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(AttestationError, match="did not answer within 0.3 s"):
            AttestationClient(url, timeout=0.3).configuration()


def test_a_wrong_url_is_an_attestation_error(service: str) -> None:
    lost = AttestationClient(service + "/nowhere")
    with pytest.raises(AttestationError, match="HTTP 404"):
        lost.configuration()


def test_messages_never_carry_key_or_nonce_bytes(
    client: AttestationClient, enclave: SimulatedEnclave, token: str
) -> None:
    secrets = [
        base64.urlsafe_b64encode(NONCE).decode()[:12],
        NONCE.hex()[:12],
        enclave.identity_public_key_der.hex()[60:80],
        hashlib.sha256(enclave.identity_public_key_der).hexdigest()[:12],
        enclave.ecdh_public.hex()[10:30],
    ]
    cases: list[dict[str, Any]] = [
        {"nonce": bytes(32)},
        {"identity_public_key_der": b"\x00" * 120},
        {"ecdh_signature": b"\x30\x00"},
        {"issuer": "x"},
    ]
    for overrides in cases:
        with pytest.raises(AttestationError) as caught:
            _verify(token, client, enclave, **overrides)
        for secret in secrets:
            assert secret not in str(caught.value)


def test_signing_key_types_other_than_the_default_verify(
    platform_dir: Path, enclave: SimulatedEnclave
) -> None:
    url, stop = start_in_thread(
        _policy(platform_dir), signing_key=SigningKey(ec.generate_private_key(ec.SECP384R1()))
    )
    try:
        es384 = AttestationClient(url)
        verified = es384.verify_evidence(enclave.evidence(NONCE), nonce=NONCE)
    finally:
        stop()
    assert verified.measurement == DEFAULT_MEASUREMENT.hex()

"""The attestation service over loopback HTTP: endpoints, refusals, policy files and the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.attestation.platform import PUBLIC_KEY_FILE, load_or_create_platform_key
from enclave.attestation.policy import Policy, PolicyError, load_policy
from enclave.attestation.service import (
    CLAIM_DEBUG,
    CLAIM_IDENTITY_HASH,
    CLAIM_MEASUREMENT,
    CLAIM_NONCE,
    CLAIM_SVN,
    SigningKey,
    jwk_thumbprint,
    start_in_thread,
)
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

ROOT = Path(__file__).resolve().parents[2]
NONCE = bytes(range(100, 132))


def _policy(platform_dir: Path, **overrides: object) -> Policy:
    data: dict[str, object] = {"allowed_measurements": [DEFAULT_MEASUREMENT.hex()]}
    data.update(overrides)
    return Policy.from_mapping(data, platform_dir=platform_dir)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _call(url: str, body: bytes | None = None, method: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _post_evidence(url: str, evidence: bytes) -> tuple[int, Any]:
    return _call(url + "/attest", json.dumps({"evidence": _b64url(evidence)}).encode())


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def enclave(platform_dir: Path) -> SimulatedEnclave:
    return SimulatedEnclave(platform_dir)


@pytest.fixture(scope="module")
def good_evidence(enclave: SimulatedEnclave) -> bytes:
    # Built once: ECDSA signatures vary in length, and hypothesis needs a fixed input to shrink.
    return enclave.evidence(NONCE)


@pytest.fixture(scope="module")
def service_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def service(platform_dir: Path, service_log: io.StringIO) -> Iterator[str]:
    url, stop = start_in_thread(_policy(platform_dir, min_svn=1), log=service_log)
    yield url
    stop()


# --- discovery ----------------------------------------------------------------------------------


def test_openid_configuration_names_issuer_and_jwks_uri(service: str) -> None:
    status, configuration = _call(service + "/.well-known/openid-configuration")
    assert status == 200
    assert configuration["issuer"] == service
    assert configuration["jwks_uri"] == service + "/certs"


def test_jwks_holds_the_key_that_signs_tokens(service: str, enclave: SimulatedEnclave) -> None:
    status, jwks = _call(service + "/certs")
    assert status == 200 and len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert {"kty", "kid", "alg", "use"} <= set(jwk) and jwk["use"] == "sig"
    assert "d" not in jwk, "the JWKS must not publish the private key"
    status, answer = _post_evidence(service, enclave.evidence(NONCE))
    assert status == 200
    header = jwt.get_unverified_header(answer["token"])
    assert header["kid"] == jwk["kid"] and header["alg"] == jwk["alg"]
    claims = jwt.decode(answer["token"], key=jwt.PyJWK(jwk), algorithms=[jwk["alg"]])
    assert claims["iss"] == service


def test_token_claims_describe_the_evidence(service: str, enclave: SimulatedEnclave) -> None:
    status, answer = _post_evidence(service, enclave.evidence(NONCE))
    assert status == 200
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert claims[CLAIM_MEASUREMENT] == DEFAULT_MEASUREMENT.hex()
    assert claims[CLAIM_SVN] == 1 and claims[CLAIM_DEBUG] is False
    assert base64.urlsafe_b64decode(claims[CLAIM_NONCE] + "==") == NONCE
    import hashlib

    assert (
        claims[CLAIM_IDENTITY_HASH] == hashlib.sha256(enclave.identity_public_key_der).hexdigest()
    )
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 300


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 7638 section 3.1 gives this RSA key and its thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_signing_key_kid_is_its_jwk_thumbprint() -> None:
    key = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert key.algorithm == "RS256"
    assert key.kid == jwk_thumbprint(key.jwk()) and key.jwk()["kid"] == key.kid


def test_loaded_signing_keys_pick_their_algorithm(tmp_path: Path) -> None:
    for private, algorithm in (
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ):
        path = tmp_path / f"{algorithm}.pem"
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        assert SigningKey.from_pem_file(path).algorithm == algorithm
    with pytest.raises(ValueError, match="P-256, EC P-384 or RSA"):
        SigningKey(ec.generate_private_key(ec.SECP521R1()))


# --- refusals: one broken check, one named error --------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "status", "code"),
    [
        ({"measurement": bytes(32)}, 403, "measurement"),
        ({"svn": 0}, 403, "svn"),
        ({"flags": 1}, 403, "debug"),
        ({"report_data": bytes(32)}, 403, "identity_binding"),
        ({"ecdh_signing_key": ec.generate_private_key(ec.SECP384R1())}, 403, "ecdh_signature"),
        ({"platform_key": ec.generate_private_key(ec.SECP384R1())}, 403, "platform_signature"),
        ({"magic": b"EEV0"}, 400, "evidence_malformed"),
        ({"trailing": b"\x00"}, 400, "evidence_malformed"),
    ],
    ids=[
        "measurement",
        "svn",
        "debug",
        "identity_binding",
        "ecdh_signature",
        "platform",
        "magic",
        "trailing",
    ],
)
def test_bad_evidence_is_refused_with_the_check_named(
    service: str, enclave: SimulatedEnclave, knobs: dict[str, object], status: int, code: str
) -> None:
    answer_status, answer = _post_evidence(service, enclave.evidence(NONCE, **knobs))  # type: ignore[arg-type]
    assert answer_status == status
    assert set(answer) == {"error", "reason"} and answer["error"] == code
    assert len(answer["reason"]) > 20 and "Traceback" not in answer["reason"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"evidence": 5}',
        b'{"evidence": "a+b/"}',
        b'{"evidence": "QQ", "extra": 1}',
        b'{"evidence": "A"}',
        b"\xff\xfe",
        b"[" * 1700 + b"]" * 10,
    ],
    ids=["text", "list", "number", "base64", "extra-key", "short-base64", "bytes", "deep"],
)
def test_bad_request_bodies_get_a_clean_400(service: str, body: bytes) -> None:
    status, answer = _call(service + "/attest", body)
    assert status == 400 and answer["error"] in {"bad_request", "evidence_malformed"}


def test_wrong_paths_and_methods_answer_json(service: str) -> None:
    assert _call(service + "/nope")[0] == 404
    assert _call(service + "/attest")[0] == 405
    assert _call(service + "/certs", b"{}", method="POST")[0] == 404


def test_oversized_body_is_refused_before_reading(service: str) -> None:
    status, answer = _call(service + "/attest", b"{" + b" " * 20000 + b"}")
    assert status == 413 and answer["error"] == "bad_request"


def test_debug_enclave_is_accepted_when_the_policy_allows_it(
    platform_dir: Path, enclave: SimulatedEnclave
) -> None:
    url, stop = start_in_thread(_policy(platform_dir, allow_debug=True))
    try:
        status, answer = _post_evidence(url, enclave.evidence(NONCE, flags=1))
    finally:
        stop()
    assert status == 200
    assert jwt.decode(answer["token"], options={"verify_signature": False})[CLAIM_DEBUG] is True


def test_untrusted_platform_is_refused(tmp_path: Path, service: str) -> None:
    stranger = SimulatedEnclave(tmp_path / "stranger-platform")
    status, answer = _post_evidence(service, stranger.evidence(NONCE))
    assert (status, answer["error"]) == (403, "platform_signature")


def test_the_log_has_one_line_per_request_and_no_evidence(
    service: str, enclave: SimulatedEnclave, service_log: io.StringIO
) -> None:
    evidence = enclave.evidence(NONCE)
    before = len(service_log.getvalue().splitlines())
    _post_evidence(service, evidence)
    _post_evidence(service, evidence[:10])
    lines = service_log.getvalue().splitlines()[before:]
    assert len(lines) == 2
    assert "POST /attest 200" in lines[0] and "POST /attest 400 evidence_malformed" in lines[1]
    encoded = _b64url(evidence)
    for line in lines:
        assert encoded[:24] not in line and NONCE.hex()[:16] not in line


# --- never a 500, never a hang ------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_flipped_or_cut_evidence_is_always_a_clean_refusal(
    service: str, good_evidence: bytes, data: st.DataObject
) -> None:
    evidence = bytearray(good_evidence)
    flips = data.draw(st.lists(st.integers(0, len(evidence) - 1), min_size=1, max_size=3))
    for position in flips:
        evidence[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(1, len(evidence)))
    status, answer = _post_evidence(service, bytes(evidence[:cut]))
    assert status in (400, 403), answer
    assert answer["error"] != "internal"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(evidence=st.binary(max_size=600))
def test_random_evidence_is_a_clean_400(service: str, evidence: bytes) -> None:
    status, answer = _post_evidence(service, evidence)
    assert status == 400 and answer["error"] == "evidence_malformed"


# --- policy files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"allowed_measurements": ["00" * 32], "allowed_measurement": []}, "unknown policy key"),
        ({"min_svn": 1}, "no allowed_measurements"),
        ({"allowed_measurements": []}, "non-empty list"),
        ({"allowed_measurements": ["00" * 31]}, r"allowed_measurements\[0\] must be 64 hex"),
        ({"allowed_measurements": ["zz" * 32]}, "not a hex digit"),
        ({"allowed_measurements": [7]}, "must be 64 hex digits"),
        ({"allowed_measurements": ["00" * 32], "min_svn": -1}, "min_svn"),
        ({"allowed_measurements": ["00" * 32], "min_svn": True}, "min_svn"),
        ({"allowed_measurements": ["00" * 32], "allow_debug": "no"}, "allow_debug"),
        ({"allowed_measurements": ["00" * 32], "issuer": ""}, "issuer"),
        ({"allowed_measurements": ["00" * 32], "trusted_platform_keys": []}, "trusted_platform"),
        (
            {"allowed_measurements": ["00" * 32], "trusted_platform_keys": ["missing.pem"]},
            "cannot read",
        ),
        (
            {"allowed_measurements": ["00" * 32], "trusted_platform_keys": ["-----BEGIN junk"]},
            "not a PEM public key",
        ),
    ],
)
def test_policy_errors_name_the_key(tmp_path: Path, data: dict[str, object], fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        Policy.from_mapping(data, base_dir=tmp_path, platform_dir=tmp_path)


def test_policy_refuses_a_platform_key_of_another_curve(tmp_path: Path) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(PolicyError, match="not an ECDSA P-384 key"):
        Policy.from_mapping(
            {"allowed_measurements": ["00" * 32], "trusted_platform_keys": [pem.decode()]},
            platform_dir=tmp_path,
        )


def test_policy_file_with_relative_key_path_and_inline_pem(tmp_path: Path) -> None:
    first = load_or_create_platform_key(tmp_path / "a").public_key()
    second = load_or_create_platform_key(tmp_path / "b").public_key()
    inline = second.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(
        json.dumps(
            {
                "allowed_measurements": ["AB" * 32],
                "min_svn": 3,
                "allow_debug": True,
                "trusted_platform_keys": [f"a/{PUBLIC_KEY_FILE}", inline],
                "issuer": "https://attest.example",
            }
        )
    )
    policy = load_policy(policy_path, platform_dir=tmp_path / "unused")
    assert policy.allowed_measurements == frozenset({bytes([0xAB]) * 32})
    assert (policy.min_svn, policy.allow_debug, policy.issuer) == (
        3,
        True,
        "https://attest.example",
    )
    assert policy.trusted_platform_keys == (first, second)
    assert not (tmp_path / "unused").exists(), "explicit keys must not create a platform key"


def test_policy_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PolicyError, match="broken.json is not valid JSON"):
        load_policy(broken)
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "absent.json")


def test_custom_issuer_is_used_in_tokens_and_discovery(
    platform_dir: Path, enclave: SimulatedEnclave
) -> None:
    url, stop = start_in_thread(_policy(platform_dir, issuer="https://attest.example"))
    try:
        configuration = _call(url + "/.well-known/openid-configuration")[1]
        token = _post_evidence(url, enclave.evidence(NONCE))[1]["token"]
    finally:
        stop()
    assert configuration["issuer"] == "https://attest.example"
    assert configuration["jwks_uri"] == url + "/certs"
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://attest.example"


# --- the command line ---------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "ENCLAVESQL_PLATFORM_DIR": str(tmp_path / "platform")}
    return subprocess.Popen(
        [sys.executable, "-c", "from engine.cli import main; raise SystemExit(main())", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_prints_its_url_first_and_serves(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps({"allowed_measurements": [DEFAULT_MEASUREMENT.hex()]}))
    process = _cli(
        tmp_path, "attestation-service", "--policy", str(policy_path), "--port", "0",
        "--token-lifetime", "60",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        enclave = SimulatedEnclave(tmp_path / "platform")
        status, answer = _post_evidence(url, enclave.evidence(NONCE))
        assert status == 200
        claims = jwt.decode(answer["token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 60 and claims["iss"] == url
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "POST /attest 200" in stderr and "Traceback" not in stderr


def test_cli_refuses_a_bad_policy_with_a_clear_message(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps({"allowed_measurements": ["00" * 32], "allowdebug": True}))
    process = _cli(tmp_path, "attestation-service", "--policy", str(policy_path), "--port", "0")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2 and stdout == ""
    assert "unknown policy key(s) allowdebug" in stderr and "Traceback" not in stderr

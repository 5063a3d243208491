"""The attestation service: an HTTP front end that appraises evidence and issues signed JWTs.

It serves `POST /attest`, `GET /.well-known/openid-configuration` and `GET /certs` (the JWKS), and
backs `enclavesql attestation-service`. It must not hold column keys, log evidence bytes, or
answer with a stack trace; every refusal is JSON `{"error": code, "reason": sentence}`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from enclave.attestation.appraisal import appraise
from enclave.attestation.evidence import EVIDENCE_MAX_LEN, Evidence, EvidenceError
from enclave.attestation.policy import Policy, PolicyError, load_policy

DEFAULT_TOKEN_LIFETIME = 300
OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/certs"
ATTEST_PATH = "/attest"
# Claim names are part of the public contract (docs/attestation.md); keep them stable.
CLAIM_MEASUREMENT = "x-enclave-measurement"
CLAIM_SVN = "x-enclave-svn"
CLAIM_DEBUG = "x-enclave-debug"
CLAIM_NONCE = "x-enclave-nonce"
CLAIM_IDENTITY_HASH = "x-enclave-identity-hash"
# Base64url text of the largest evidence, plus room for the JSON around it.
MAX_BODY_LEN = (EVIDENCE_MAX_LEN * 4) // 3 + 256
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


class SigningKey:
    """The service's token signing key with its JWS algorithm and RFC 7638 thumbprint `kid`.

    >>> key = SigningKey.generate()
    >>> key.algorithm, len(key.kid), key.jwk()["kty"]
    ('ES256', 43, 'EC')
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self.private_key = private_key
        members: tuple[str, ...]
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            algorithms = {"secp256r1": "ES256", "secp384r1": "ES384"}
            if private_key.curve.name not in algorithms:
                raise ValueError("the signing key must be EC P-256, EC P-384 or RSA (2048+ bits)")
            self.algorithm = algorithms[private_key.curve.name]
            public_jwk = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
            members = ("crv", "kty", "x", "y")
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise ValueError("an RSA signing key must have at least 2048 bits")
            self.algorithm = "RS256"
            public_jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
            members = ("e", "kty", "n")
        else:
            raise ValueError("the signing key must be EC P-256, EC P-384 or RSA (2048+ bits)")
        self._public_jwk = {name: public_jwk[name] for name in members}
        self.kid = jwk_thumbprint(self._public_jwk)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> SigningKey:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the signing key must be EC P-256, EC P-384 or RSA (2048+ bits)")
        return cls(key)

    def jwk(self) -> dict[str, str]:
        return {**self._public_jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """The RFC 7638 thumbprint: base64url SHA-256 of the required members, sorted, no spaces.

    >>> jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AQ", "kid": "ignored"})
    'fpsA8udergWQQtZ5ijw9k_6RoFRa-SBsNr8jkweRkU4'
    """
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


class AttestationService:
    """The HTTP-free core: appraise a request body and answer (status, JSON object)."""

    def __init__(
        self,
        policy: Policy,
        *,
        signing_key: SigningKey | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_lifetime < 1:
            raise ValueError("the token lifetime must be at least 1 second")
        self.policy = policy
        self.signing_key = signing_key or SigningKey.generate()
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.base_url = ""

    @property
    def issuer(self) -> str:
        return self.policy.issuer or self.base_url

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.base_url + JWKS_PATH,
            "id_token_signing_alg_values_supported": [self.signing_key.algorithm],
            "claims_supported": [
                "iss",
                "iat",
                "nbf",
                "exp",
                CLAIM_MEASUREMENT,
                CLAIM_SVN,
                CLAIM_DEBUG,
                CLAIM_NONCE,
                CLAIM_IDENTITY_HASH,
            ],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.signing_key.jwk()]}

    def attest(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one `POST /attest` body: (200, {"token"}) or (4xx, {"error", "reason"})."""
        try:
            evidence_bytes = _evidence_from_body(body)
            evidence = appraise(evidence_bytes, self.policy)
        except EvidenceError as error:
            return error.status, {"error": error.code, "reason": error.reason}
        return 200, {"token": self.issue_token(evidence)}

    def issue_token(self, evidence: Evidence) -> str:
        issued_at = int(self.clock())
        claims = {
            "iss": self.issuer,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.token_lifetime,
            CLAIM_MEASUREMENT: evidence.measurement.hex(),
            CLAIM_SVN: evidence.svn,
            CLAIM_DEBUG: evidence.debug,
            CLAIM_NONCE: _b64url(evidence.nonce),
            CLAIM_IDENTITY_HASH: hashlib.sha256(evidence.identity_public_key_der).hexdigest(),
        }
        return jwt.encode(
            claims,
            self.signing_key.private_key,
            algorithm=self.signing_key.algorithm,
            headers={"kid": self.signing_key.kid, "typ": "JWT"},
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _evidence_from_body(body: bytes) -> bytes:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EvidenceError(
            "bad_request", 'the body is not JSON; send {"evidence": "<base64url>"}'
        ) from None
    if not isinstance(request, dict) or set(request) != {"evidence"}:
        raise EvidenceError(
            "bad_request", 'the body must be a JSON object with exactly one key, "evidence"'
        )
    text = request["evidence"]
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise EvidenceError("bad_request", "evidence must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        raise EvidenceError("bad_request", "evidence is not valid base64url") from None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that stops sending mid-request must not hold a thread forever.
    timeout = 10
    server_version = "enclavesql-attestation/1"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        service = self.server.service
        if self.path == OPENID_CONFIGURATION_PATH:
            self._answer(200, service.openid_configuration())
        elif self.path == JWKS_PATH:
            self._answer(200, service.jwks())
        elif self.path == ATTEST_PATH:
            self._answer(405, _error("method_not_allowed", "use POST for /attest"))
        else:
            self._answer(404, _error("not_found", f"no such endpoint; try {ATTEST_PATH}"))

    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        if self.path != ATTEST_PATH:
            self._answer(404, _error("not_found", f"POST evidence to {ATTEST_PATH}"))
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._answer(411, _error("bad_request", "send a Content-Length header"))
            return
        length = int(length_text)
        if length > MAX_BODY_LEN:
            self._answer(
                413,
                _error("bad_request", f"the body is over {MAX_BODY_LEN} bytes; not evidence v2"),
            )
            return
        try:
            body = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return
        try:
            status, answer = self.server.service.attest(body)
        except Exception as error:  # noqa: BLE001 - a bug must still answer JSON, not a trace
            self._log(f"internal error {type(error).__name__}")
            status, answer = 500, _error("internal", "the service failed; see its log")
        self._answer(status, answer)

    def _answer(self, status: int, answer: Mapping[str, Any]) -> None:
        payload = json.dumps(answer).encode("utf-8")
        self._error_code = str(answer.get("error", "-"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # One line per request: method, path, status and error code; never the body.
        self._log(f"{self.command} {self.path} {code} {getattr(self, '_error_code', '-')}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed
        self._log(format % args)

    def _log(self, line: str) -> None:
        stream = self.server.log
        if stream is not None:
            stream.write(f"{self.log_date_time_string()} {self.client_address[0]} {line}\n")
            stream.flush()


def _error(code: str, reason: str) -> dict[str, str]:
    return {"error": code, "reason": reason}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], service: AttestationService, log: TextIO | None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.service = service
        self.log = log
        host, port = self.server_address[:2]
        host_text = host.decode("ascii") if isinstance(host, bytes) else str(host)
        display = f"[{host_text}]" if ":" in host_text else host_text
        service.base_url = f"http://{display}:{port}"


def start_in_thread(
    policy: Policy | Mapping[str, Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    signing_key: SigningKey | None = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    clock: Callable[[], float] = time.time,
    log: TextIO | None = None,
) -> tuple[str, Callable[[], None]]:
    """Serve in a background thread; return (base URL, stop). For tests and embedded demos.

    A mapping policy is validated as a policy file would be.

    >>> import json, tempfile, urllib.request
    >>> with tempfile.TemporaryDirectory() as platform:
    ...     data = {"allowed_measurements": ["00" * 32]}
    ...     policy = Policy.from_mapping(data, platform_dir=platform)
    ...     url, stop = start_in_thread(policy)
    ...     with urllib.request.urlopen(url + OPENID_CONFIGURATION_PATH) as answer:
    ...         configuration = json.load(answer)
    ...     stop()
    >>> configuration["issuer"] == url, configuration["jwks_uri"] == url + "/certs"
    (True, True)
    """
    if not isinstance(policy, Policy):
        policy = Policy.from_mapping(policy)
    service = AttestationService(
        policy, signing_key=signing_key, token_lifetime=token_lifetime, clock=clock
    )
    server = _Server((host, port), service, log)
    thread = threading.Thread(target=server.serve_forever, name="attestation-service", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return service.base_url, stop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclavesql attestation-service",
        description="Appraise enclave evidence against a policy and issue signed JWTs.",
    )
    parser.add_argument("--policy", required=True, help="policy JSON file")
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME,
        help="token lifetime in seconds (default 300)",
    )
    parser.add_argument(
        "--signing-key", help="PEM private key (EC P-256/P-384 or RSA); default: a fresh P-256 key"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`enclavesql attestation-service`: print the URL on stdout's first line, then serve.

    It serves until SIGTERM or Ctrl-C and returns 0; a bad policy or key returns 2.
    """
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        policy = load_policy(args.policy)
    except PolicyError as error:
        print(f"enclavesql attestation-service: {error}", file=sys.stderr)
        return 2
    try:
        signing_key = SigningKey.from_pem_file(args.signing_key) if args.signing_key else None
        service = AttestationService(
            policy, signing_key=signing_key, token_lifetime=args.token_lifetime
        )
    except (OSError, ValueError, TypeError) as error:
        print(f"enclavesql attestation-service: signing key or lifetime: {error}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(
            f"enclavesql attestation-service: warning: listening on {args.host}, not loopback",
            file=sys.stderr,
        )
    try:
        server = _Server((args.host, args.port), service, sys.stderr)
    except OSError as error:
        print(f"enclavesql attestation-service: cannot listen: {error.strerror}", file=sys.stderr)
        return 1
    print(service.base_url, flush=True)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())

"""The client's view of one attested enclave session: attestation, session key, packages.

`EnclaveSession.establish` asks the host to open an enclave session, verifies the evidence with
the attestation service (or skips it, loudly, for protocol "none"), and derives the spec 5.5
session key. Then `package_for` seals CEKs and per-query grants into enclave packages with a
strictly increasing counter. It must not send a CEK whose CMK was not verified for enclave use,
talk to DuckDB or the host's internals, or let the session key leave this object.
"""

from __future__ import annotations

import hmac
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from enclave.attestation.evidence import EvidenceError, parse_evidence
from engine.client.attestation import AttestationClient
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_authorization import Grant
from engine.client.enclave_package import Authorization, build_package
from engine.client.session_key import derive_session_key, new_client_ecdh_key
from engine.errors import (
    AttestationError,
    DatabaseError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

__all__ = [
    "PROTOCOLS",
    "NONCE_LEN",
    "InsecureEnclaveWarning",
    "SessionGateway",
    "AttestationSummary",
    "EnclaveSession",
]

PROTOCOLS = ("service", "none")
NONCE_LEN = 32
_MAX_CEK_ID = 0xFFFF


class InsecureEnclaveWarning(UserWarning):
    """The enclave was not attested (protocol "none"): keys go to an enclave nobody verified."""


class SessionGateway(Protocol):
    """What the client needs from the host to open and close an enclave session.

    The host relays opaque bytes: the client's nonce and ECDH public key in, the enclave's
    evidence out. `engine.host.enclave_gateway.EnclaveGateway` is the embedded implementation.
    """

    def open_session(
        self, nonce: bytes, client_ecdh_public: bytes, platform_dir: str | os.PathLike[str]
    ) -> tuple[int, bytes]: ...

    def close_session(self, session_id: int) -> None: ...


@dataclass(frozen=True)
class AttestationSummary:
    """What the client knows about the enclave of this session (for the REPL's `.attest`).

    With protocol "none" nothing was verified: `verified` is False, and the measurement is only
    what the enclave claims.
    """

    protocol: str
    measurement: str
    svn: int
    debug: bool
    expires_at: datetime | None
    verified: bool


class EnclaveSession:
    """One attested session with the enclave; create it with `EnclaveSession.establish`.

    The session key is a bytearray held only here and zeroed by `close()`. CEK names get small
    ids (1, 2, ...) that stay fixed for the session's life, and a CEK goes into a package only
    after `verify_cek` checked its CMK's enclave metadata signature.
    """

    def __init__(
        self,
        *,
        gateway: SessionGateway,
        session_id: int,
        session_key: bytearray,
        summary: AttestationSummary,
    ) -> None:
        self._gateway = gateway
        self._session_id = session_id
        self._session_key = session_key
        self._summary = summary
        self._lock = threading.Lock()
        self._counter = 0
        self._cek_ids: dict[str, int] = {}
        self._verified: set[str] = set()
        self._closed = False

    # --- establishing --------------------------------------------------------------------------

    @classmethod
    def establish(
        cls,
        gateway: SessionGateway,
        *,
        protocol: str,
        platform_dir: str | os.PathLike[str],
        attestation_url: str | None = None,
        expected_measurements: Iterable[str] | None = None,
        min_svn: int = 0,
        allow_debug: bool = False,
        timeout: float = 5.0,
        issuer: str | None = None,
        warn_insecure: bool = True,
    ) -> EnclaveSession:
        """Open an enclave session through the host, attest it, and derive the session key.

        Protocol "service" runs every check of docs/attestation.md against the service at
        `attestation_url`; a failure raises AttestationError naming the check, and the enclave
        session is closed again. Protocol "none" skips attestation and emits one
        InsecureEnclaveWarning (pass `warn_insecure=False` when the connection already warned).

        >>> EnclaveSession.establish(None, protocol="hgs", platform_dir=".")
        Traceback (most recent call last):
        ...
        engine.errors.ProgrammingError: unknown attestation protocol 'hgs'; use 'service' or 'none'
        """
        if protocol not in PROTOCOLS:
            raise ProgrammingError(
                f"unknown attestation protocol {protocol!r}; use 'service' or 'none'"
            )
        if protocol == "service" and not attestation_url:
            raise ProgrammingError(
                "attestation protocol 'service' needs attestation_url (the attestation "
                "service's base URL); use protocol 'none' only for development"
            )
        nonce = os.urandom(NONCE_LEN)
        client_key = new_client_ecdh_key()
        client_public = client_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        session_id, evidence = gateway.open_session(nonce, client_public, platform_dir)
        try:
            if protocol == "service":
                assert attestation_url is not None
                verified = AttestationClient(
                    attestation_url, timeout=timeout, issuer=issuer
                ).verify_evidence(
                    evidence,
                    nonce=nonce,
                    expected_measurements=expected_measurements,
                    min_svn=min_svn,
                    allow_debug=allow_debug,
                )
                ecdh_public = verified.ecdh_public
                summary = AttestationSummary(
                    protocol="service",
                    measurement=verified.measurement,
                    svn=verified.svn,
                    debug=verified.debug,
                    expires_at=verified.expires_at,
                    verified=True,
                )
            else:
                ecdh_public, summary = _unattested(evidence, nonce)
                if warn_insecure:
                    warnings.warn(
                        "attestation protocol 'none': the enclave was not attested, so column "
                        "encryption keys go to an enclave nobody verified; use it for "
                        "development only",
                        InsecureEnclaveWarning,
                        stacklevel=2,
                    )
            session_key = derive_session_key(client_key, ecdh_public)
        except BaseException:
            _close_quietly(gateway, session_id)
            raise
        return cls(gateway=gateway, session_id=session_id, session_key=session_key, summary=summary)

    # --- keys and packages ---------------------------------------------------------------------

    @property
    def session_id(self) -> int:
        """The enclave's id for this session (random 64-bit; not a secret)."""
        return self._session_id

    @property
    def closed(self) -> bool:
        return self._closed

    def cek_id(self, cek_name: str) -> int:
        """The session's small integer id of a CEK name; the same name keeps its id.

        The host needs these ids for operator calls; they reveal only which CEKs a query uses.
        """
        self._require_open()
        if not isinstance(cek_name, str) or not cek_name:
            raise ProgrammingError("a column encryption key name must be a non-empty str")
        with self._lock:
            cek_id = self._cek_ids.get(cek_name)
            if cek_id is None:
                if len(self._cek_ids) >= _MAX_CEK_ID:
                    raise OperationalError(
                        "this enclave session has used 65535 column encryption keys; "
                        "open a new connection"
                    )
                cek_id = len(self._cek_ids) + 1
                self._cek_ids[cek_name] = cek_id
            return cek_id

    def verify_cek(
        self,
        cek_name: str,
        resolver: ColumnKeyResolver,
        *,
        cmk_provider: str,
        cmk_key_path: str,
        allow_enclave_computations: bool,
        signature: bytes | None,
        cmk_name: str | None = None,
    ) -> int:
        """Check that the CEK's CMK allows enclave computations (signed), then admit the CEK.

        Only admitted CEKs may go into a package. It raises what
        `ColumnKeyResolver.verify_enclave_cmk` raises, and returns the CEK's session id.
        """
        self._require_open()
        resolver.verify_enclave_cmk(
            cmk_provider,
            cmk_key_path,
            allow_enclave_computations,
            signature,
            cmk_name=cmk_name,
        )
        cek_id = self.cek_id(cek_name)
        with self._lock:
            self._verified.add(cek_name)
        return cek_id

    def forget_cek(self, cek_name: str) -> None:
        """Withdraw an admission (after the CEK's CMK changed); it keeps its id."""
        with self._lock:
            self._verified.discard(cek_name)

    def package_for(
        self,
        statement_text: str,
        keys: Mapping[str, bytes | bytearray],
        authorizations: Iterable[Grant],
    ) -> bytes:
        """The enclave package for one execution of `statement_text`.

        `keys` maps CEK names to plaintext CEKs; each must have passed `verify_cek` and be used
        by at least one grant, and every grant must name one of them. The counter increases by
        one per call (thread-safe); packages must reach the enclave in the order they were built,
        since the enclave refuses any counter not above the last one it accepted.
        """
        self._require_open()
        grants = list(authorizations)
        for grant in grants:
            if not isinstance(grant, Grant):
                raise ProgrammingError("authorizations must be Grant objects")
        granted = {grant.cek_name for grant in grants}
        for name in keys:
            if name not in self._verified:
                raise OperationalError(
                    f"column encryption key '{name}' was not admitted to the enclave: its column "
                    "master key's enclave metadata signature was not verified in this session "
                    "(call verify_cek first)"
                )
            if name not in granted:
                # Sending a key no operation needs would only widen what the enclave holds.
                raise ProgrammingError(
                    f"column encryption key '{name}' is in the package but no grant uses it; "
                    "leave it out"
                )
        missing = sorted(granted - set(keys))
        if missing:
            raise ProgrammingError(
                f"a grant names column encryption key '{missing[0]}', which is not in the "
                "package's keys"
            )
        key_entries = [(self.cek_id(name), cek) for name, cek in keys.items()]
        entries = [
            Authorization(
                self.cek_id(grant.cek_name), grant.operator, grant.type_code, grant.constant
            )
            for grant in grants
        ]
        with self._lock:
            self._require_open()
            self._counter += 1
            counter = self._counter
            # Sealing inside the lock keeps the session key alive until the package exists,
            # even if another thread closes the session meanwhile.
            return build_package(
                session_id=self._session_id,
                session_key=self._session_key,
                counter=counter,
                statement_text=statement_text,
                keys=key_entries,
                authorizations=entries,
            )

    # --- reporting and closing ----------------------------------------------------------------

    def attestation_summary(self) -> AttestationSummary:
        """Measurement (hex), SVN, debug flag and token expiry of this session's enclave."""
        return self._summary

    def close(self) -> None:
        """Zero the session key and ask the host to close the enclave session. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._session_key[:] = bytes(len(self._session_key))
            self._cek_ids.clear()
            self._verified.clear()
        _close_quietly(self._gateway, self._session_id)

    def _require_open(self) -> None:
        if self._closed:
            raise InterfaceError("the enclave session is closed; open a new connection")

    def __enter__(self) -> EnclaveSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EnclaveSession {state} protocol={self._summary.protocol}>"


def _unattested(evidence: bytes, nonce: bytes) -> tuple[bytes, AttestationSummary]:
    """Protocol "none": take the ECDH key from the evidence, trusting nothing but its shape."""
    try:
        parsed = parse_evidence(evidence)
    except EvidenceError as error:
        raise AttestationError(f"the enclave's evidence is malformed: {error.reason}") from None
    except TypeError:
        raise AttestationError("the host relayed evidence that is not bytes") from None
    # Not a security check (nothing is attested), but it catches a host relaying stale evidence.
    if not hmac.compare_digest(parsed.nonce, nonce):
        raise AttestationError(
            "the enclave's evidence carries a different nonce; the host relayed stale evidence"
        )
    summary = AttestationSummary(
        protocol="none",
        measurement=parsed.measurement.hex(),
        svn=parsed.svn,
        debug=parsed.debug,
        expires_at=None,
        verified=False,
    )
    return parsed.ecdh_public, summary


def _close_quietly(gateway: SessionGateway, session_id: int) -> None:
    # Closing is cleanup: a host that already forgot the session must not mask the real error.
    try:
        gateway.close_session(session_id)
    except DatabaseError:
        pass

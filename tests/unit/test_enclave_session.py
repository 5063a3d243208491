"""Session establishment against a fake host gateway (simulated evidence) and the real
attestation service on loopback; the host gateway over a stand-in binding; `enclave-info`.

The fake gateway plays the enclave with pyca directly, so equal session keys are shown by the
enclave side opening a package the client built.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from enclave import info_tool
from enclave.attestation.policy import Policy
from enclave.attestation.service import start_in_thread
from enclave.reference import decrypt_cell
from engine import cli
from engine.client import enclave_authorization as grants
from engine.client.cek_cache import CekCache
from engine.client.cmk_metadata import sign_cmk_metadata
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_package import TypeCode
from engine.client.enclave_session import (
    NONCE_LEN,
    EnclaveSession,
    InsecureEnclaveWarning,
)
from engine.client.keystores import build_registry
from engine.errors import AttestationError, OperationalError, ProgrammingError
from engine.host.enclave_gateway import EnclaveGateway
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

OTHER_MEASUREMENT = hashlib.sha256(b"a build nobody approved").digest()


class FakeGateway:
    """The host relaying to a simulated enclave; `breaks` are SimulatedEnclave.evidence knobs."""

    def __init__(self, enclave: SimulatedEnclave, **breaks: Any) -> None:
        self.enclave = enclave
        self.breaks = breaks
        self.stale_nonce = False
        self.tamper: Callable[[bytes, bytes], bytes] = lambda evidence, nonce: evidence
        self.opened: list[tuple[int, bytes, bytes, str]] = []
        self.closed: list[int] = []

    def open_session(
        self, nonce: bytes, client_ecdh_public: bytes, platform_dir: str | os.PathLike[str]
    ) -> tuple[int, bytes]:
        session_id = int.from_bytes(os.urandom(8), "little")
        self.opened.append((session_id, nonce, client_ecdh_public, os.fspath(platform_dir)))
        evidence_nonce = os.urandom(len(nonce)) if self.stale_nonce else nonce
        evidence = self.enclave.evidence(evidence_nonce, **self.breaks)
        return session_id, self.tamper(evidence, nonce)

    def close_session(self, session_id: int) -> None:
        self.closed.append(session_id)

    def enclave_session_key(self) -> bytes:
        return self.enclave.session_key(self.opened[-1][2])


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def service(platform_dir: Path) -> Iterator[str]:
    policy = Policy.from_mapping(
        {"allowed_measurements": [DEFAULT_MEASUREMENT.hex()], "min_svn": 1},
        platform_dir=platform_dir,
    )
    url, stop = start_in_thread(policy)
    yield url
    stop()


@pytest.fixture(scope="module")
def signed_cmk(tmp_path_factory: pytest.TempPathFactory) -> tuple[ColumnKeyResolver, dict]:
    registry = build_registry(key_directory=tmp_path_factory.mktemp("keys"))
    provider = registry.get("PEM_FILE")
    provider.generate_key("cmk.pem", key_size=2048)
    arguments = dict(
        cmk_provider="PEM_FILE",
        cmk_key_path="cmk.pem",
        allow_enclave_computations=True,
        signature=sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", True),
    )
    return ColumnKeyResolver(registry, CekCache()), arguments


def _establish(gateway: FakeGateway, platform_dir: Path, url: str, **options: Any) -> Any:
    return EnclaveSession.establish(
        gateway,  # type: ignore[arg-type]
        protocol="service",
        attestation_url=url,
        platform_dir=platform_dir,
        **options,
    )


# --- the happy path -------------------------------------------------------------------------


def test_an_attested_session_shares_its_key_with_the_enclave(
    platform_dir: Path, service: str, signed_cmk: tuple[ColumnKeyResolver, dict]
) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    session = _establish(
        gateway, platform_dir, service, expected_measurements=[DEFAULT_MEASUREMENT.hex()]
    )
    session_id, nonce, client_public, relayed_dir = gateway.opened[0]
    assert len(nonce) == NONCE_LEN and relayed_dir == os.fspath(platform_dir)
    assert len(client_public) == 97 and client_public[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), client_public)
    assert session.session_id == session_id

    resolver, cmk = signed_cmk
    session.verify_cek("CEK1", resolver, **cmk)
    package = session.package_for(
        "SELECT 1", {"CEK1": bytes(range(32))}, [grants.rank("CEK1", TypeCode.INT64)]
    )
    # The enclave side derived its key with pyca alone; it opens the client's package.
    blob = decrypt_cell(gateway.enclave_session_key(), package[8:])
    assert struct.unpack_from("<Q", package) == (session_id,)
    assert struct.unpack_from("<q", blob, 16) == (1,)
    assert bytes(range(32)) in blob

    summary = session.attestation_summary()
    assert summary.protocol == "service" and summary.verified
    assert (summary.measurement, summary.svn, summary.debug) == (
        DEFAULT_MEASUREMENT.hex(),
        1,
        False,
    )
    assert summary.expires_at is not None
    session.close()
    assert gateway.closed == [session_id]


def test_each_session_gets_its_own_nonce_and_key(platform_dir: Path, service: str) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    with _establish(gateway, platform_dir, service), _establish(gateway, platform_dir, service):
        (_, first_nonce, first_public, _), (_, second_nonce, second_public, _) = gateway.opened
        assert first_nonce != second_nonce and first_public != second_public


# --- attestation failures: each named, each closes the enclave session ----------------------


@pytest.mark.parametrize(
    ("enclave_options", "breaks", "client_options", "words"),
    [
        ({"measurement": OTHER_MEASUREMENT}, {}, {}, r"\(HTTP 403, measurement\)"),
        ({"svn": 0}, {}, {}, r"\(HTTP 403, svn\)"),
        ({"debug": True}, {}, {}, r"\(HTTP 403, debug\)"),
        ({}, {"report_data": bytes(32)}, {}, r"\(HTTP 403, identity_binding\)"),
        ({}, {"trailing": b"\0"}, {}, "malformed"),
        (
            {},
            {"ecdh_signing_key": ec.generate_private_key(ec.SECP384R1())},
            {},
            r"\(HTTP 403, ecdh_signature\)",
        ),
        (
            {},
            {"platform_key": ec.generate_private_key(ec.SECP384R1())},
            {},
            r"\(HTTP 403, platform_signature\)",
        ),
        (
            {},
            {},
            {"expected_measurements": [OTHER_MEASUREMENT.hex()]},
            r"check 5 \(enclave policy\)",
        ),
        ({}, {}, {"min_svn": 2}, r"check 5 \(enclave policy\)"),
        ({}, {}, {"issuer": "https://attest.example"}, "expected issuer"),
    ],
    ids=[
        "service-measurement",
        "service-svn",
        "service-debug",
        "service-identity-binding",
        "service-malformed",
        "service-ecdh-signature",
        "service-platform-key",
        "client-measurement",
        "client-min-svn",
        "client-issuer",
    ],
)
def test_each_attestation_failure_is_named(
    platform_dir: Path,
    service: str,
    enclave_options: dict[str, Any],
    breaks: dict[str, Any],
    client_options: dict[str, Any],
    words: str,
) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir, **enclave_options), **breaks)
    with pytest.raises(AttestationError, match=words):
        _establish(gateway, platform_dir, service, **client_options)
    assert gateway.closed == [gateway.opened[0][0]]


def test_evidence_for_another_nonce_fails_the_nonce_check(platform_dir: Path, service: str) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    gateway.stale_nonce = True
    with pytest.raises(AttestationError, match=r"check 4 \(nonce\)"):
        _establish(gateway, platform_dir, service)
    assert len(gateway.closed) == 1


def test_a_host_that_swaps_in_its_own_ecdh_key_is_caught(platform_dir: Path, service: str) -> None:
    # The host relays genuine evidence with its own ECDH key written over the enclave's: the
    # platform signature no longer covers the report, so the session never gets a key.
    host_point = SimulatedEnclave(platform_dir).ecdh_public

    def swap(evidence: bytes, nonce: bytes) -> bytes:
        start = 78 + len(nonce)
        return evidence[:start] + host_point + evidence[start + 97 :]

    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    gateway.tamper = swap
    with pytest.raises(AttestationError, match="platform_signature"):
        _establish(gateway, platform_dir, service)


def test_a_service_that_is_down_fails_with_attestation_error(platform_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    with pytest.raises(AttestationError, match="cannot reach the attestation service"):
        _establish(gateway, platform_dir, f"http://127.0.0.1:{port}", timeout=2.0)
    assert len(gateway.closed) == 1


def test_a_silent_service_fails_within_the_timeout(platform_dir: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        gateway = FakeGateway(SimulatedEnclave(platform_dir))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(AttestationError, match=r"did not answer within 0\.3 s"):
            _establish(gateway, platform_dir, url, timeout=0.3)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


# --- protocol "none" and argument checks ------------------------------------------------------


def test_protocol_none_warns_once_and_still_derives_the_key(platform_dir: Path) -> None:
    enclave = SimulatedEnclave(platform_dir, measurement=OTHER_MEASUREMENT, debug=True)
    gateway = FakeGateway(enclave)
    with pytest.warns(InsecureEnclaveWarning, match="not attested") as record:
        session = EnclaveSession.establish(
            gateway,  # type: ignore[arg-type]
            protocol="none",
            platform_dir=platform_dir,
        )
    assert len(record) == 1
    summary = session.attestation_summary()
    assert not summary.verified and summary.expires_at is None
    assert (summary.measurement, summary.debug) == (OTHER_MEASUREMENT.hex(), True)
    session.close()


def test_protocol_none_can_skip_a_repeated_warning(platform_dir: Path) -> None:
    # pytest turns warnings into errors, so this fails if a warning is emitted.
    session = EnclaveSession.establish(
        FakeGateway(SimulatedEnclave(platform_dir)),  # type: ignore[arg-type]
        protocol="none",
        platform_dir=platform_dir,
        warn_insecure=False,
    )
    session.close()


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ({"breaks": {"magic": b"EEV0"}}, "malformed"),
        ({"stale": True}, "different nonce"),
    ],
)
def test_protocol_none_still_refuses_garbled_or_stale_evidence(
    platform_dir: Path, setup: dict[str, Any], words: str
) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir), **setup.get("breaks", {}))
    gateway.stale_nonce = setup.get("stale", False)
    with pytest.raises(AttestationError, match=words):
        EnclaveSession.establish(
            gateway,  # type: ignore[arg-type]
            protocol="none",
            platform_dir=platform_dir,
            warn_insecure=False,
        )
    assert len(gateway.closed) == 1


def test_bad_protocol_arguments_are_programming_errors(platform_dir: Path) -> None:
    gateway = FakeGateway(SimulatedEnclave(platform_dir))
    with pytest.raises(ProgrammingError, match="unknown attestation protocol"):
        EnclaveSession.establish(gateway, protocol="aas", platform_dir=platform_dir)  # type: ignore[arg-type]
    with pytest.raises(ProgrammingError, match="needs attestation_url"):
        EnclaveSession.establish(gateway, protocol="service", platform_dir=platform_dir)  # type: ignore[arg-type]
    assert gateway.opened == []


def test_cek_ids_are_small_and_stable(platform_dir: Path) -> None:
    session = EnclaveSession.establish(
        FakeGateway(SimulatedEnclave(platform_dir)),  # type: ignore[arg-type]
        protocol="none",
        platform_dir=platform_dir,
        warn_insecure=False,
    )
    assert [session.cek_id(name) for name in ("B", "A", "B", "C", "A")] == [1, 2, 1, 3, 2]
    session.close()


# --- the host gateway over a stand-in binding ---------------------------------------------------


class StandInBinding:
    """Records what the gateway hands to the binding."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            return {"open_session": (5, b"evidence"), "begin_query": 9}.get(name, "result")

        return call


def test_the_gateway_hashes_the_statement_it_executes() -> None:
    binding = StandInBinding()
    gateway = EnclaveGateway(binding)
    assert gateway.open_session(b"n" * 32, b"\x04" * 97, Path("/tmp/p")) == (5, b"evidence")
    with gateway.query(5, b"package", "SELECT ?") as query_id:
        assert query_id == 9
    assert binding.calls[1] == (
        "begin_query",
        (5, b"package", hashlib.sha256("SELECT ?".encode("utf-16-le")).digest()),
    )
    assert binding.calls[2] == ("end_query", (9,))
    assert binding.calls[0] == ("open_session", (b"n" * 32, b"\x04" * 97, "/tmp/p"))


def test_the_gateway_ends_the_query_when_the_block_fails() -> None:
    binding = StandInBinding()
    with pytest.raises(RuntimeError), EnclaveGateway(binding).query(1, b"p", "q"):
        raise RuntimeError("the DuckDB query failed")
    assert [name for name, _ in binding.calls] == ["begin_query", "end_query"]


def test_the_gateway_passes_operator_calls_through() -> None:
    binding = StandInBinding()
    gateway = EnclaveGateway(binding)
    gateway.compare(1, 2, 3, 4, b"c", "cells")
    gateway.aggregate(1, 2, 4, 12, "cells", "groups", 7, 2)
    gateway.reencrypt(1, 2, 9, b"\x03\x00\x02", "cells")
    assert binding.calls == [
        ("enclave_compare", (1, 2, 3, 4, b"c", "cells", None)),
        ("enclave_aggregate", (1, 2, 4, 12, "cells", "groups", 7, 2)),
        ("enclave_reencrypt", (1, 2, 9, b"\x03\x00\x02", "cells")),
    ]


def test_the_gateway_refuses_to_start_without_the_native_enclave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "enclave.binding", None)
    with pytest.raises(OperationalError, match="native enclave is not built"):
        EnclaveGateway()


# --- enclavesql enclave-info --------------------------------------------------------------------


def test_enclave_info_prints_the_policy_fields(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    measurement = hashlib.sha256(b"some build").digest()
    stand_in = types.ModuleType("enclave.binding")
    stand_in.enclave_info = lambda: types.SimpleNamespace(  # type: ignore[attr-defined]
        measurement=measurement, svn=3, debug=False
    )
    monkeypatch.setitem(sys.modules, "enclave.binding", stand_in)
    assert cli.main(["enclave-info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "measurement": measurement.hex(),
        "svn": 3,
        "debug": False,
    }
    assert info_tool.main([]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"measurement: {measurement.hex()}",
        "svn: 3",
        "debug: false",
    ]


def test_enclave_info_says_when_the_enclave_is_not_built(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "enclave.binding", None)
    assert info_tool.main(["--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "not built" in captured.err and "pip install" in captured.err


# --- docs that stay true ------------------------------------------------------------------------


def test_the_enclave_doc_names_every_operator_builder_and_grant_helper() -> None:
    from engine.client import enclave_package
    from engine.client.enclave_package import Operator as Op

    text = (Path(__file__).resolve().parents[2] / "docs" / "enclave.md").read_text("utf-8")
    missing = [op.name for op in Op if f"`{op.name}`" not in text]
    missing += [
        name
        for name in enclave_package.__all__
        if name.endswith("_constant") and f"`{name}`" not in text
    ]
    missing += [
        name
        for name in ("verify_cek", "package_for", "warn_insecure", "InsecureEnclaveWarning")
        if name not in text
    ]
    assert missing == []

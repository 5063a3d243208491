"""The real C enclave, end to end: attested session, package, an authorized comparison that
matches plaintext, and every refusal the package protocol promises (replay, reordering, an
unauthorized oracle query, another statement, an ended query, a tampered package).

It skips while the binding has no enclave section.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.host.enclave_gateway import EnclaveGateway, native_enclave_available

if not native_enclave_available():
    pytest.skip("native enclave not built yet", allow_module_level=True)

from enclave.attestation.policy import Policy  # noqa: E402
from enclave.attestation.service import start_in_thread  # noqa: E402
from enclave.binding import CellKey, enclave_info, encrypt_cells  # noqa: E402
from engine import cli  # noqa: E402
from engine.client import enclave_authorization as grants  # noqa: E402
from engine.client.cek_cache import CekCache  # noqa: E402
from engine.client.cmk_metadata import sign_cmk_metadata  # noqa: E402
from engine.client.column_keys import ColumnKeyResolver  # noqa: E402
from engine.client.enclave_package import Operator, TypeCode  # noqa: E402
from engine.client.enclave_session import EnclaveSession, InsecureEnclaveWarning  # noqa: E402
from engine.client.keystores import build_registry  # noqa: E402
from engine.errors import (  # noqa: E402
    CellAuthenticationError,
    InterfaceError,
    OperationalError,
)

# Words of the binding's fixed message per status, so each test proves WHICH check refused.
REPLAY = "replayed or reordered"
NOT_AUTHORIZED = "did not authorize"
OTHER_STATEMENT = "different statement"
NO_QUERY = "no such query context"
NO_SESSION = "no such session"
ROWS = 3000
STATEMENT = "SELECT id FROM t WHERE amount < ?"
CEK = os.urandom(32)


def _int64(value: int) -> bytes:
    return struct.pack("<q", value)


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def service(platform_dir: Path) -> Iterator[str]:
    measurement = enclave_info().measurement.hex()
    policy = Policy.from_mapping(
        {"allowed_measurements": [measurement], "min_svn": 1}, platform_dir=platform_dir
    )
    url, stop = start_in_thread(policy)
    yield url
    stop()


@pytest.fixture(scope="module")
def gateway() -> EnclaveGateway:
    return EnclaveGateway()


@pytest.fixture
def session(gateway: EnclaveGateway, service: str, platform_dir: Path) -> Iterator[EnclaveSession]:
    opened = EnclaveSession.establish(
        gateway,
        protocol="service",
        attestation_url=service,
        platform_dir=platform_dir,
        expected_measurements=[enclave_info().measurement.hex()],
        min_svn=1,
    )
    registry = build_registry(key_directory=platform_dir)
    provider = registry.get("PEM_FILE")
    if not (platform_dir / "cmk.pem").exists():
        provider.generate_key("cmk.pem", key_size=2048)
    opened.verify_cek(
        "CEK1",
        ColumnKeyResolver(registry, CekCache()),
        cmk_provider="PEM_FILE",
        cmk_key_path="cmk.pem",
        allow_enclave_computations=True,
        signature=sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", True),
    )
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def column() -> tuple[list[int | None], Any]:
    generator = random.Random(20261129)
    values: list[int | None] = [
        None if index % 97 == 0 else generator.randint(-(2**40), 2**40) for index in range(ROWS)
    ]
    values[1], values[2] = -(2**63), 2**63 - 1
    plaintexts = pa.array([None if v is None else _int64(v) for v in values], pa.binary())
    with CellKey(CEK) as key:
        cells = encrypt_cells(key, plaintexts, deterministic=False)
    return values, cells


def _comparand(value: int) -> bytes:
    with CellKey(CEK) as key:
        cell = encrypt_cells(key, pa.array([_int64(value)]), deterministic=False)[0].as_py()
    assert isinstance(cell, bytes)
    return cell


def _less_than_query(session: EnclaveSession, threshold: int) -> tuple[bytes, grants.Grant]:
    grant = grants.compare("CEK1", TypeCode.INT64, Operator.LT, _comparand(threshold))
    return session.package_for(STATEMENT, {"CEK1": CEK}, [grant]), grant


def test_an_authorized_comparison_matches_plaintext(
    session: EnclaveSession, gateway: EnclaveGateway, column: tuple[list[int | None], Any]
) -> None:
    values, cells = column
    package, grant = _less_than_query(session, 12345)
    cek_id = session.cek_id("CEK1")
    with gateway.query(session.session_id, package, STATEMENT) as query_id:
        result = gateway.compare(
            query_id, cek_id, TypeCode.INT64, Operator.LT, grant.constant, cells
        )
    assert result.to_pylist() == [None if v is None else v < 12345 for v in values]


def test_a_replayed_package_is_refused(session: EnclaveSession, gateway: EnclaveGateway) -> None:
    package, _ = _less_than_query(session, 0)
    query_id = gateway.begin_query(session.session_id, package, STATEMENT)
    gateway.end_query(query_id)
    with pytest.raises(OperationalError, match=REPLAY):
        gateway.begin_query(session.session_id, package, STATEMENT)


def test_a_reordered_package_is_refused(session: EnclaveSession, gateway: EnclaveGateway) -> None:
    older, _ = _less_than_query(session, 1)
    newer, _ = _less_than_query(session, 2)
    gateway.end_query(gateway.begin_query(session.session_id, newer, STATEMENT))
    with pytest.raises(OperationalError, match=REPLAY):
        gateway.begin_query(session.session_id, older, STATEMENT)


def test_the_host_cannot_use_the_enclave_as_an_oracle(
    session: EnclaveSession, gateway: EnclaveGateway, column: tuple[list[int | None], Any]
) -> None:
    _, cells = column
    package, grant = _less_than_query(session, 0)
    cek_id = session.cek_id("CEK1")
    with gateway.query(session.session_id, package, STATEMENT) as query_id:
        # A constant the client never approved: another row's cell, to learn how rows compare.
        stolen = cells[3].as_py()
        with pytest.raises(OperationalError, match=NOT_AUTHORIZED):
            gateway.compare(query_id, cek_id, TypeCode.INT64, Operator.LT, stolen, cells)
        # The approved constant with another operator, and an operation never granted.
        with pytest.raises(OperationalError, match=NOT_AUTHORIZED):
            gateway.compare(query_id, cek_id, TypeCode.INT64, Operator.GT, grant.constant, cells)
        with pytest.raises(OperationalError, match=NOT_AUTHORIZED):
            gateway.rank(query_id, cek_id, TypeCode.INT64, cells)
        # What was approved still works afterwards.
        gateway.compare(query_id, cek_id, TypeCode.INT64, Operator.LT, grant.constant, cells)


def test_a_package_for_another_statement_is_refused(
    session: EnclaveSession, gateway: EnclaveGateway
) -> None:
    grant = grants.compare("CEK1", TypeCode.INT64, Operator.LT, _comparand(5))
    package = session.package_for("SELECT id FROM t", {"CEK1": CEK}, [grant])
    with pytest.raises(OperationalError, match=OTHER_STATEMENT):
        gateway.begin_query(session.session_id, package, STATEMENT)


def test_an_ended_query_id_stops_working(
    session: EnclaveSession, gateway: EnclaveGateway, column: tuple[list[int | None], Any]
) -> None:
    _, cells = column
    package, grant = _less_than_query(session, 0)
    cek_id = session.cek_id("CEK1")
    query_id = gateway.begin_query(session.session_id, package, STATEMENT)
    gateway.end_query(query_id)
    with pytest.raises(OperationalError, match=NO_QUERY):
        gateway.compare(query_id, cek_id, TypeCode.INT64, Operator.LT, grant.constant, cells)


def test_a_tampered_package_fails_authentication(
    session: EnclaveSession, gateway: EnclaveGateway
) -> None:
    package = bytearray(_less_than_query(session, 0)[0])
    package[40] ^= 1
    with pytest.raises(CellAuthenticationError):
        gateway.begin_query(session.session_id, bytes(package), STATEMENT)


def test_a_closed_session_takes_no_more_packages(
    session: EnclaveSession, gateway: EnclaveGateway
) -> None:
    package, _ = _less_than_query(session, 0)
    session_id = session.session_id
    session.close()
    with pytest.raises(OperationalError, match=NO_SESSION):
        gateway.begin_query(session_id, package, STATEMENT)
    with pytest.raises(InterfaceError):
        _less_than_query(session, 0)


def test_enclave_info_prints_what_the_evidence_carries(
    session: EnclaveSession, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["enclave-info", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    summary = session.attestation_summary()
    assert record == {"measurement": summary.measurement, "svn": summary.svn, "debug": False}


def test_closing_the_session_ends_its_queries(
    session: EnclaveSession, gateway: EnclaveGateway, column: tuple[list[int | None], Any]
) -> None:
    _, cells = column
    package, grant = _less_than_query(session, 0)
    cek_id = session.cek_id("CEK1")
    query_id = gateway.begin_query(session.session_id, package, STATEMENT)
    session.close()
    with pytest.raises(OperationalError, match=NO_QUERY):
        gateway.compare(query_id, cek_id, TypeCode.INT64, Operator.LT, grant.constant, cells)


def test_a_package_goes_only_to_its_own_session(
    session: EnclaveSession, gateway: EnclaveGateway, service: str, platform_dir: Path
) -> None:
    with pytest.warns(InsecureEnclaveWarning):
        other = EnclaveSession.establish(gateway, protocol="none", platform_dir=platform_dir)
    try:
        package, _ = _less_than_query(session, 0)
        with pytest.raises(OperationalError, match=NO_SESSION):
            gateway.begin_query(other.session_id, package, STATEMENT)
        # Relabelled with the other session's id, the cell no longer opens under its key.
        relabelled = struct.pack("<Q", other.session_id) + package[8:]
        with pytest.raises(CellAuthenticationError):
            gateway.begin_query(other.session_id, relabelled, STATEMENT)
    finally:
        other.close()

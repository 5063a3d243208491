"""The enclave's sessions, evidence and packages through enclave.binding.

Evidence is checked by the Python parser and verifiers and by a live attestation service; the
session key is checked by running the client's derivation and sealing a package with it. Every
refusal (replay, foreign session, tampering, unauthorized operator) must raise the documented
PEP 249 exception and leave the process and the enclave usable.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave import binding
from enclave.attestation.evidence import (
    parse_evidence,
    verify_ecdh_signature,
    verify_identity_binding,
    verify_platform_signature,
)
from enclave.attestation.platform import platform_public_key
from enclave.attestation.policy import Policy
from enclave.attestation.service import start_in_thread
from engine.client.attestation import AttestationClient
from engine.client.codec import encrypt_column
from engine.errors import (
    AttestationError,
    CellAuthenticationError,
    DataError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from tests.support.enclave_harness import Client, keys_blob, seal, statement_hash

CEK = bytes(range(32))
STATEMENT = "SELECT * FROM t WHERE x = ?"


@pytest.fixture
def platform_dir(tmp_path: Path) -> Path:
    return tmp_path / "platform"


@pytest.fixture
def client(platform_dir: Path) -> Iterator[Client]:
    platform_dir.mkdir()
    session = Client(platform_dir)
    yield session
    try:
        session.close()
    except OperationalError:
        pass  # the test closed it itself


def int_cells(values: list[int | None]) -> pa.Array:
    return encrypt_column(values, CEK, "RANDOMIZED", "BIGINT")


# ---- identity and evidence -----------------------------------------------------------------------


def test_enclave_info_measures_the_loaded_module() -> None:
    import enclave._native as native

    info = binding.enclave_info()
    assert info.measurement == hashlib.sha256(Path(native.__file__).read_bytes()).digest()
    assert info.svn == 1
    assert info.debug is False


def test_evidence_parses_and_every_signature_verifies(client: Client, platform_dir: Path) -> None:
    evidence = parse_evidence(client.evidence)
    info = binding.enclave_info()
    assert evidence.nonce == client.nonce
    assert evidence.measurement == info.measurement
    assert evidence.svn == info.svn and evidence.debug is False and evidence.flags == 0
    assert len(evidence.report) == 175 + len(client.nonce)
    verify_platform_signature(evidence, [platform_public_key(platform_dir)])
    verify_identity_binding(evidence)
    verify_ecdh_signature(
        evidence.identity_public_key_der,
        evidence.ecdh_public,
        evidence.nonce,
        evidence.ecdh_signature,
    )


def test_platform_key_is_created_private_and_reused(client: Client, platform_dir: Path) -> None:
    private = platform_dir / "platform_key.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    assert (platform_dir / "platform_key.pub.pem").exists()
    before = private.read_bytes()
    second = Client(platform_dir)
    try:
        assert private.read_bytes() == before
        # One identity key per process; a fresh ECDH key per session.
        assert second.parsed.identity_public_key_der == client.parsed.identity_public_key_der
        assert second.parsed.ecdh_public != client.parsed.ecdh_public
        assert second.session_id != client.session_id
    finally:
        second.close()


def test_evidence_from_a_python_made_platform_key(tmp_path: Path) -> None:
    # The Python side created the key pair first; the enclave must sign with that key.
    trusted = platform_public_key(tmp_path)
    session = Client(tmp_path)
    try:
        verify_platform_signature(session.parsed, [trusted])
    finally:
        session.close()


def test_unusable_platform_key_is_an_operational_error(tmp_path: Path) -> None:
    (tmp_path / "platform_key.pem").write_text("not a key")
    with pytest.raises(OperationalError, match="platform key"):
        Client(tmp_path)


def test_attestation_service_accepts_the_evidence_end_to_end(
    client: Client, platform_dir: Path
) -> None:
    measurement = binding.enclave_info().measurement.hex()
    policy = Policy.from_mapping(
        {"allowed_measurements": [measurement], "min_svn": 1}, platform_dir=platform_dir
    )
    url, stop = start_in_thread(policy)
    try:
        verified = AttestationClient(url).verify_evidence(
            client.evidence, nonce=client.nonce, expected_measurements=[measurement], min_svn=1
        )
        assert verified.ecdh_public == client.parsed.ecdh_public
        # A nonce the client did not send fails the client's check.
        with pytest.raises(AttestationError):
            AttestationClient(url).verify_evidence(client.evidence, nonce=os.urandom(32))
    finally:
        stop()


def test_session_keys_agree(client: Client) -> None:
    # The harness derived the session key on the client side; a package sealed with it opens.
    query = client.begin(STATEMENT, [(1, CEK)], [])
    binding.end_query(query)


def test_open_session_rejects_bad_arguments(platform_dir: Path) -> None:
    point = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    with pytest.raises(ProgrammingError, match="nonce"):
        binding.open_session(bytes(15), point, platform_dir)
    with pytest.raises(ProgrammingError, match="nonce"):
        binding.open_session(bytes(257), point, platform_dir)
    with pytest.raises(ProgrammingError, match="97-byte"):
        binding.open_session(bytes(16), point[:-1], platform_dir)
    off_curve = point[:-1] + bytes([point[-1] ^ 1])
    with pytest.raises(ProgrammingError, match="not a point"):
        binding.open_session(bytes(16), off_curve, platform_dir)


# ---- packages ------------------------------------------------------------------------------------


def test_counter_must_increase(client: Client) -> None:
    first = client.package(STATEMENT, [(1, CEK)], [], counter=5)
    query = binding.begin_query(client.session_id, first, statement_hash(STATEMENT))
    binding.end_query(query)
    # The same package again (a replay), and a lower counter (reordering), are refused.
    for package in (first, client.package(STATEMENT, [(1, CEK)], [], counter=4)):
        with pytest.raises(OperationalError, match="replayed or reordered"):
            binding.begin_query(client.session_id, package, statement_hash(STATEMENT))
    later = client.package(STATEMENT, [(1, CEK)], [], counter=6)
    binding.end_query(binding.begin_query(client.session_id, later, statement_hash(STATEMENT)))


def test_refused_package_does_not_advance_the_counter(client: Client) -> None:
    wrong_statement = client.package(STATEMENT, [(1, CEK)], [], counter=10)
    with pytest.raises(OperationalError, match="different statement"):
        binding.begin_query(client.session_id, wrong_statement, statement_hash("SELECT 2"))
    # Counter 2 is still fresh because 10 was never accepted.
    package = client.package(STATEMENT, [(1, CEK)], [], counter=2)
    binding.end_query(binding.begin_query(client.session_id, package, statement_hash(STATEMENT)))


def test_foreign_session_ids_are_refused(client: Client, platform_dir: Path) -> None:
    other = Client(platform_dir)
    try:
        package = other.package(STATEMENT, [(1, CEK)], [])
        with pytest.raises(OperationalError, match="no such session"):
            binding.begin_query(client.session_id, package, statement_hash(STATEMENT))
        # The right session id in the prefix but the wrong session key: authentication fails.
        forged = struct.pack("<Q", client.session_id) + package[8:]
        with pytest.raises(CellAuthenticationError):
            binding.begin_query(client.session_id, forged, statement_hash(STATEMENT))
        with pytest.raises(OperationalError, match="no such session"):
            binding.begin_query(2**64 - 1, package, statement_hash(STATEMENT))
    finally:
        other.close()


def test_every_flipped_byte_fails_authentication(client: Client) -> None:
    package = client.package(STATEMENT, [(1, CEK)], [(1, binding.OP_RANK, 1, b"")])
    for position in range(8, len(package), 7):
        tampered = bytearray(package)
        tampered[position] ^= 0x40
        with pytest.raises(CellAuthenticationError):
            binding.begin_query(client.session_id, bytes(tampered), statement_hash(STATEMENT))
    for cut in (len(package) - 1, len(package) - 16, 8 + 64, 9):
        with pytest.raises(CellAuthenticationError):
            binding.begin_query(client.session_id, package[:cut], statement_hash(STATEMENT))
    with pytest.raises(OperationalError, match="malformed"):
        binding.begin_query(client.session_id, package[:7], statement_hash(STATEMENT))
    # Nothing was accepted, so the original package still opens.
    binding.end_query(binding.begin_query(client.session_id, package, statement_hash(STATEMENT)))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda blob: blob[:-1],  # one byte short
        lambda blob: blob + b"\x00",  # trailing byte
        lambda blob: blob[:56] + struct.pack("<H", 2) + blob[58:],  # key count too high
    ],
)
def test_malformed_blob_is_a_package_error(client: Client, mangle: object) -> None:
    blob = keys_blob(1, STATEMENT, [(1, CEK)], [(1, binding.OP_EQ, 1, b"")])
    package = struct.pack("<Q", client.session_id) + seal(client.session_key, mangle(blob))  # type: ignore[operator]
    with pytest.raises(OperationalError, match="malformed"):
        binding.begin_query(client.session_id, package, statement_hash(STATEMENT))


def test_duplicate_key_ids_and_unknown_codes_are_package_errors(client: Client) -> None:
    for keys, grants in (
        ([(1, CEK), (1, CEK)], []),
        ([(1, CEK)], [(2, binding.OP_EQ, 1, b"")]),  # a grant for a key not in the package
        ([(1, CEK)], [(1, 99, 1, b"")]),
        ([(1, CEK)], [(1, binding.OP_EQ, 13, b"")]),
    ):
        blob = keys_blob(1, STATEMENT, keys, grants)
        package = struct.pack("<Q", client.session_id) + seal(client.session_key, blob)
        with pytest.raises(OperationalError, match="malformed"):
            binding.begin_query(client.session_id, package, statement_hash(STATEMENT))


def test_closed_session_and_ended_query_are_refused(client: Client) -> None:
    grant = (1, binding.OP_RANK, binding.TYPE_INT64, b"")
    query = client.begin(STATEMENT, [(1, CEK)], [grant])
    cells = int_cells([3, 1])
    assert binding.enclave_rank(query, 1, binding.TYPE_INT64, cells).to_pylist() == [1, 0]
    binding.end_query(query)
    with pytest.raises(OperationalError, match="no such query"):
        binding.enclave_rank(query, 1, binding.TYPE_INT64, cells)
    with pytest.raises(OperationalError, match="no such query"):
        binding.end_query(query)
    query = client.begin(STATEMENT, [(1, CEK)], [grant])
    client.close()
    with pytest.raises(OperationalError, match="no such query"):
        binding.enclave_rank(query, 1, binding.TYPE_INT64, cells)
    with pytest.raises(OperationalError, match="no such session"):
        client.begin(STATEMENT, [(1, CEK)], [grant])


def test_open_queries_per_session_are_bounded(client: Client) -> None:
    queries = [client.begin(STATEMENT, [(1, CEK)], []) for _ in range(64)]
    with pytest.raises(OperationalError, match="limit"):
        client.begin(STATEMENT, [(1, CEK)], [])
    binding.end_query(queries.pop())
    queries.append(client.begin(STATEMENT, [(1, CEK)], []))
    for query in queries:
        binding.end_query(query)


def test_ids_are_random_not_counters(client: Client) -> None:
    queries = [client.begin(STATEMENT, [(1, CEK)], []) for _ in range(8)]
    try:
        assert len(set(queries)) == 8
        assert max(queries) > 2**32  # 64-bit random values, not small counters
        assert sorted(queries) != queries or sorted(queries, reverse=True) != queries
    finally:
        for query in queries:
            binding.end_query(query)


def test_engine_package_builder_is_accepted(client: Client) -> None:
    package_module = pytest.importorskip("engine.client.enclave_package")
    grant = package_module.Authorization(1, binding.OP_RANK, binding.TYPE_INT64)
    package = package_module.build_package(
        session_id=client.session_id,
        session_key=client.session_key,
        counter=1,
        statement_text=STATEMENT,
        keys=[(1, CEK)],
        authorizations=[grant],
    )
    query = binding.begin_query(client.session_id, package, statement_hash(STATEMENT))
    try:
        ranks = binding.enclave_rank(query, 1, binding.TYPE_INT64, int_cells([5, None, 2]))
        assert ranks.to_pylist() == [1, None, 0]
    finally:
        binding.end_query(query)


# ---- authorization -------------------------------------------------------------------------------


def test_operations_before_any_package_are_refused(client: Client) -> None:
    with pytest.raises(OperationalError, match="no such query"):
        binding.enclave_compare(0, 1, binding.TYPE_INT64, binding.OP_EQ, b"", int_cells([1]))


def test_the_enclave_is_no_comparison_oracle(client: Client) -> None:
    """A host that swaps in a constant the client never approved learns nothing."""
    approved = int_cells([100])[0].as_py()
    probe = int_cells([42])[0].as_py()
    cells = int_cells([42, 100, None])
    grant = (1, binding.OP_LT, binding.TYPE_INT64, approved)
    query = client.begin(STATEMENT, [(1, CEK), (2, os.urandom(32))], [grant])
    try:
        result = binding.enclave_compare(
            query, 1, binding.TYPE_INT64, binding.OP_LT, approved, cells
        )
        assert result.to_pylist() == [True, False, None]
        refusals = [
            (1, binding.TYPE_INT64, binding.OP_LT, probe),  # another constant
            (1, binding.TYPE_INT64, binding.OP_GT, approved),  # another operator
            (1, binding.TYPE_FLOAT64, binding.OP_LT, approved),  # another type
            (2, binding.TYPE_INT64, binding.OP_LT, approved),  # another key of the query
            (3, binding.TYPE_INT64, binding.OP_LT, approved),  # a key not in the query
            (1, binding.TYPE_INT64, binding.OP_LT, b""),  # column-vs-column instead
        ]
        for cek_id, type_code, operator, constant in refusals:
            with pytest.raises(OperationalError, match="did not authorize"):
                binding.enclave_compare(query, cek_id, type_code, operator, constant, cells, None)
        with pytest.raises(OperationalError, match="did not authorize"):
            binding.enclave_rank(query, 1, binding.TYPE_INT64, cells)
        # The process and the query survive every refusal.
        again = binding.enclave_compare(
            query, 1, binding.TYPE_INT64, binding.OP_LT, approved, cells
        )
        assert again.to_pylist() == [True, False, None]
    finally:
        binding.end_query(query)


def test_tampered_cells_fail_authentication(client: Client) -> None:
    grant = (1, binding.OP_RANK, binding.TYPE_INT64, b"")
    query = client.begin(STATEMENT, [(1, CEK)], [grant])
    try:
        cells = int_cells([1, 2, 3]).to_pylist()
        bad = bytearray(cells[1])
        bad[40] ^= 1
        with pytest.raises(CellAuthenticationError):
            binding.enclave_rank(
                query, 1, binding.TYPE_INT64, pa.array([cells[0], bytes(bad), cells[2]])
            )
        # A cell under another key is the same failure.
        foreign = encrypt_column([1], os.urandom(32), "RANDOMIZED", "BIGINT")
        with pytest.raises(CellAuthenticationError):
            binding.enclave_rank(query, 1, binding.TYPE_INT64, foreign)
        # A well-authenticated value of the wrong length for its type, too.
        wrong_length = encrypt_column([1], CEK, "RANDOMIZED", "REAL")
        with pytest.raises(CellAuthenticationError):
            binding.enclave_rank(query, 1, binding.TYPE_INT64, wrong_length)
    finally:
        binding.end_query(query)


def test_type_errors_and_overflow_map_to_pep249(client: Client) -> None:
    like = struct.pack("<I", 0) + int_cells([1])[0].as_py()
    grants = [
        (1, binding.OP_LIKE, binding.TYPE_INT64, like),
        (1, binding.OP_SUM, binding.TYPE_UTF8, b""),
        (1, binding.OP_SUM, binding.TYPE_INT64, b""),
    ]
    query = client.begin(STATEMENT, [(1, CEK)], grants)
    try:
        with pytest.raises(NotSupportedError):
            binding.enclave_compare(
                query, 1, binding.TYPE_INT64, binding.OP_LIKE, like, int_cells([1])
            )
        text = encrypt_column(["a"], CEK, "RANDOMIZED", "VARCHAR")
        with pytest.raises(NotSupportedError):
            binding.enclave_aggregate(query, 1, binding.TYPE_UTF8, binding.OP_SUM, text, [0], 1)
        # 2**63 - 1 twelve million times is far below 10**38, but 10**38 / (2**63-1) ~ 1.1e19
        # rows is not testable; DECIMAL overflow is tested in test_enclave_operators.
        big = int_cells([2**63 - 1] * 3)
        total = binding.enclave_aggregate(
            query, 1, binding.TYPE_INT64, binding.OP_SUM, big, [0, 0, 0], 1
        )
        assert total[0].is_valid
    finally:
        binding.end_query(query)


def test_decimal_sum_overflow_is_a_data_error(client: Client) -> None:
    from decimal import Decimal

    grant = (1, binding.OP_SUM, binding.TYPE_DECIMAL, b"")
    query = client.begin(STATEMENT, [(1, CEK)], [grant])
    try:
        near = Decimal("9" * 37 + "0")
        cells = encrypt_column([near, near], CEK, "RANDOMIZED", "DECIMAL(38,0)")
        with pytest.raises(DataError, match="out of range"):
            binding.enclave_aggregate(
                query, 1, binding.TYPE_DECIMAL, binding.OP_SUM, cells, [0, 0], 1
            )
    finally:
        binding.end_query(query)


# ---- malformed input from a hostile host ---------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    constant=st.binary(max_size=200),
    cells=st.lists(st.one_of(st.none(), st.binary(max_size=120)), max_size=6),
    operator=st.integers(1, 18),
    type_code=st.integers(0, 14),
    mutate_cell=st.booleans(),
)
def test_hostile_operator_calls_only_raise_pep249_errors(
    shared_client: Client,
    constant: bytes,
    cells: list[bytes | None],
    operator: int,
    type_code: int,
    mutate_cell: bool,
) -> None:
    """Random constants, cells, operators and types: an answer or a PEP 249 error, no crash."""
    real = int_cells([1, 2])
    if mutate_cell and cells:
        cells[0] = real[0].as_py()
    grants = [(1, operator, max(1, min(type_code, 12)), constant)]
    query = shared_client.begin(STATEMENT, [(1, CEK)], grants)
    batch = pa.array(cells, pa.binary())
    calls: list[Callable[[], object]] = [
        lambda: binding.enclave_compare(query, 1, type_code, operator, constant, batch),
        lambda: binding.enclave_compare(query, 1, type_code, operator, b"", batch, batch),
        lambda: binding.enclave_rank(query, 1, type_code, batch),
        lambda: binding.enclave_aggregate(
            query, 1, type_code, operator, batch, [0] * len(cells), 1
        ),
        lambda: binding.enclave_reencrypt(query, 1, type_code, constant, batch),
        lambda: binding.enclave_encrypt(query, 1, type_code, constant, batch),
    ]
    try:
        for call in calls:
            try:
                call()
            except (
                CellAuthenticationError,
                OperationalError,
                ProgrammingError,
                NotSupportedError,
                DataError,
            ):
                pass  # the documented refusals; anything else (InternalError, a crash) fails
    finally:
        binding.end_query(query)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    session = Client(tmp_path_factory.mktemp("platform"))
    yield session
    session.close()

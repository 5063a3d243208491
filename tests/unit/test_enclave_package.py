"""The enclave package and constant blobs, opened by a parser written here from the contract.

Packages are decrypted with the pure-Python reference codec and split with struct, independent
of the builder; the counter is checked across threads; a CEK whose CMK was not verified for
enclave use never gets into a package.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.reference import decrypt_cell
from engine.client import enclave_authorization as grants
from engine.client.cek_cache import CekCache
from engine.client.cmk_metadata import sign_cmk_metadata
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_package import (
    MODE_DETERMINISTIC,
    MODE_RANDOMIZED,
    Authorization,
    Operator,
    TypeCode,
    between_constant,
    build_package,
    compare_constant,
    encrypt_constant,
    in_constant,
    like_constant,
    reencrypt_constant,
    type_code_for,
)
from engine.client.enclave_session import AttestationSummary, EnclaveSession
from engine.client.keystores import build_registry
from engine.errors import (
    CellAuthenticationError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from engine.types import NormalizationForm

SESSION_KEY = bytes(range(100, 132))
CEK_A = bytes(range(32))
CEK_B = bytes(range(32, 64))


@dataclass
class OpenedPackage:
    session_id: int
    prefix: bytes
    counter: int
    statement_hash: bytes
    keys: list[tuple[int, int, bytes, int, bytes]]  # (database_id, md_version, ...)
    authorizations: list[tuple[int, int, int, bytes]]


def open_package(package: bytes, session_key: bytes = SESSION_KEY) -> OpenedPackage:
    """The contract's layout, read field by field; any length mismatch fails the test."""
    (session_id,) = struct.unpack_from("<Q", package, 0)
    blob = decrypt_cell(session_key, package[8:])
    prefix = blob[:16]
    (counter,) = struct.unpack_from("<q", blob, 16)
    digest = blob[24:56]
    (key_count,) = struct.unpack_from("<H", blob, 56)
    position = 58
    keys = []
    for _ in range(key_count):
        database_id, md_version, cek_id = struct.unpack_from("<I8sH", blob, position)
        keys.append((database_id, 0, md_version, cek_id, blob[position + 14 : position + 46]))
        position += 46
    (authorization_count,) = struct.unpack_from("<H", blob, position)
    position += 2
    authorizations = []
    for _ in range(authorization_count):
        cek_id, operator, type_code = struct.unpack_from("<HBB", blob, position)
        authorizations.append((cek_id, operator, type_code, blob[position + 4 : position + 36]))
        position += 36
    assert position == len(blob), "bytes after the last authorization"
    return OpenedPackage(session_id, prefix, counter, digest, keys, authorizations)


def utf16_sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-16-le")).digest()


# --- build_package --------------------------------------------------------------------------


def test_every_field_of_a_package() -> None:
    constant = b"\x01" * 70
    package = build_package(
        session_id=0xFEDC_BA98_7654_3210,
        session_key=SESSION_KEY,
        counter=5,
        statement_text="SELECT * FROM t WHERE c < ?",
        keys=[(3, CEK_A), (9, CEK_B)],
        authorizations=[
            Authorization(3, Operator.LT, TypeCode.INT64, constant),
            Authorization(9, Operator.RANK, TypeCode.UTF8),
        ],
    )
    opened = open_package(package)
    assert opened.session_id == 0xFEDC_BA98_7654_3210
    assert opened.counter == 5
    assert opened.statement_hash == utf16_sha256("SELECT * FROM t WHERE c < ?")
    assert opened.keys == [(0, 0, bytes(8), 3, CEK_A), (0, 0, bytes(8), 9, CEK_B)]
    assert opened.authorizations == [
        (3, 3, 1, hashlib.sha256(constant).digest()),
        (9, 10, 9, hashlib.sha256(b"").digest()),
    ]
    # The cell is the randomized AEAD format: version byte 1, 65 bytes of header and tag.
    assert package[8] == 1


def test_the_random_prefix_and_iv_differ_between_packages() -> None:
    arguments = dict(
        session_id=1,
        session_key=SESSION_KEY,
        counter=1,
        statement_text="x",
        keys=[],
        authorizations=[],
    )
    first, second = build_package(**arguments), build_package(**arguments)  # type: ignore[arg-type]
    assert first != second
    assert open_package(first).prefix != open_package(second).prefix


def test_another_session_key_cannot_open_a_package() -> None:
    package = build_package(
        session_id=1,
        session_key=SESSION_KEY,
        counter=1,
        statement_text="x",
        keys=[(1, CEK_A)],
        authorizations=[Authorization(1, Operator.GROUP, TypeCode.UTF8)],
    )
    with pytest.raises(CellAuthenticationError):
        open_package(package, bytes(32))


def test_a_flipped_byte_anywhere_in_the_cell_fails_authentication() -> None:
    package = bytearray(
        build_package(
            session_id=1,
            session_key=SESSION_KEY,
            counter=1,
            statement_text="x",
            keys=[],
            authorizations=[],
        )
    )
    for position in (8, 9, 40, 60, len(package) - 1):
        tampered = bytearray(package)
        tampered[position] ^= 0x40
        with pytest.raises(CellAuthenticationError):
            open_package(bytes(tampered))


def test_statement_text_with_non_bmp_characters_hashes_as_utf16() -> None:
    text = "SELECT '\U0001f600 é'"
    package = build_package(
        session_id=1,
        session_key=SESSION_KEY,
        counter=1,
        statement_text=text,
        keys=[],
        authorizations=[],
    )
    assert open_package(package).statement_hash == utf16_sha256(text)


_key_entries = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.binary(min_size=32, max_size=32)),
    max_size=6,
    unique_by=lambda entry: entry[0],
)


@settings(max_examples=40, deadline=None)
@given(
    keys=_key_entries,
    counter=st.integers(1, 2**63 - 1),
    session_id=st.integers(0, 2**64 - 1),
    text=st.text(max_size=40),
    data=st.data(),
)
def test_any_package_opens_to_what_was_put_in(
    keys: list[tuple[int, bytes]], counter: int, session_id: int, text: str, data: st.DataObject
) -> None:
    authorizations = []
    if keys:
        authorizations = data.draw(
            st.lists(
                st.builds(
                    Authorization,
                    st.sampled_from([cek_id for cek_id, _ in keys]),
                    st.sampled_from(list(Operator)),
                    st.sampled_from(list(TypeCode)),
                    st.binary(max_size=80),
                ),
                max_size=5,
                unique=True,
            )
        )
    package = build_package(
        session_id=session_id,
        session_key=SESSION_KEY,
        counter=counter,
        statement_text=text,
        keys=keys,
        authorizations=authorizations,
    )
    opened = open_package(package)
    assert (opened.session_id, opened.counter) == (session_id, counter)
    assert opened.statement_hash == hashlib.sha256(text.encode("utf-16-le")).digest()
    assert [(entry[3], entry[4]) for entry in opened.keys] == keys
    assert opened.authorizations == [
        (a.cek_id, int(a.operator), int(a.type_code), hashlib.sha256(a.constant).digest())
        for a in authorizations
    ]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"counter": 0}, "counter"),
        ({"counter": 2**63}, "counter"),
        ({"session_id": -1}, "session_id"),
        ({"session_id": 2**64}, "session_id"),
        ({"session_key": bytes(31)}, "session key"),
        ({"keys": [(1, CEK_A), (1, CEK_B)]}, "twice"),
        ({"keys": [(1, CEK_A[:31])]}, "32 bytes"),
        ({"keys": [(70000, CEK_A)]}, "cek_id"),
        ({"authorizations": [Authorization(2, Operator.EQ, TypeCode.INT64)]}, "not in the"),
    ],
)
def test_malformed_arguments_are_refused(changes: dict[str, object], words: str) -> None:
    arguments: dict[str, object] = dict(
        session_id=1,
        session_key=SESSION_KEY,
        counter=1,
        statement_text="x",
        keys=[(1, CEK_A)],
        authorizations=[],
    )
    arguments.update(changes)
    with pytest.raises(ProgrammingError, match=words):
        build_package(**arguments)  # type: ignore[arg-type]


def test_an_authorization_with_an_unknown_operator_or_type_is_refused() -> None:
    with pytest.raises(ProgrammingError, match="operator"):
        Authorization(1, 0, TypeCode.INT64)
    with pytest.raises(ProgrammingError, match="type code"):
        Authorization(1, Operator.EQ, 13)


def test_codes_are_the_contract_numbers() -> None:
    assert [int(op) for op in Operator][:18] == list(range(1, 19))
    # Authorization-only codes (package entries, never a call's operator) start at 64.
    assert int(Operator.REENCRYPT_TARGET) == 64
    assert [op.name for op in Operator][:11] == [
        "EQ",
        "NE",
        "LT",
        "LE",
        "GT",
        "GE",
        "BETWEEN",
        "IN",
        "LIKE",
        "RANK",
        "GROUP",
    ]
    assert [int(code) for code in TypeCode] == list(range(1, 13))
    assert type_code_for(NormalizationForm.DATETIMEOFFSET) == 8
    assert type_code_for(NormalizationForm.GUID) == 12
    assert {type_code_for(form) for form in NormalizationForm} == set(TypeCode)


def test_codes_match_the_native_binding_when_it_has_the_enclave() -> None:
    binding = pytest.importorskip("enclave.binding")
    if not hasattr(binding, "OP_EQ"):
        pytest.skip("native enclave not built yet")
    for op in Operator:
        assert getattr(binding, f"OP_{op.name}") == op
    for code in TypeCode:
        assert getattr(binding, f"TYPE_{code.name}") == code
    assert (binding.MODE_DETERMINISTIC, binding.MODE_RANDOMIZED) == (
        MODE_DETERMINISTIC,
        MODE_RANDOMIZED,
    )


def test_host_and_client_hash_the_statement_alike() -> None:
    from engine.client.enclave_package import statement_hash as client_hash
    from engine.host.enclave_gateway import statement_hash as host_hash

    for text in ("SELECT 1", "", "é\U0001f600", "a\ud800b"):
        assert client_hash(text) == host_hash(text)


# --- constant blobs -----------------------------------------------------------------------


def _split_prefixed(blob: bytes) -> list[bytes]:
    items, position = [], 0
    while position < len(blob):
        (length,) = struct.unpack_from("<I", blob, position)
        items.append(blob[position + 4 : position + 4 + length])
        position += 4 + length
    assert position == len(blob)
    return items


def test_compare_constant_is_the_cell_or_empty() -> None:
    assert compare_constant(b"\x01cell") == b"\x01cell"
    assert compare_constant(None) == b""
    with pytest.raises(ProgrammingError):
        compare_constant(b"")


def test_between_constant_is_two_length_prefixed_cells() -> None:
    low, high = b"L" * 65, b"H" * 81
    assert _split_prefixed(between_constant(low, high)) == [low, high]


def test_in_constant_is_a_count_then_length_prefixed_cells() -> None:
    cells = [b"a" * 65, b"b" * 81, b"c" * 65]
    blob = in_constant(cells)
    assert struct.unpack_from("<I", blob, 0) == (3,)
    assert _split_prefixed(blob[4:]) == cells
    with pytest.raises(ProgrammingError, match="at least one"):
        in_constant([])


def test_like_constant_is_the_escape_code_point_then_the_pattern() -> None:
    pattern = b"P" * 65
    assert like_constant(pattern) == b"\0\0\0\0" + pattern
    assert like_constant(pattern, "\\") == struct.pack("<I", 0x5C) + pattern
    assert like_constant(pattern, "\U0001f600") == struct.pack("<I", 0x1F600) + pattern
    for bad in ("", "ab", "\0"):
        with pytest.raises(ProgrammingError, match="escape"):
            like_constant(pattern, bad)


def test_reencrypt_and_encrypt_constants() -> None:
    assert reencrypt_constant(0x0102, MODE_DETERMINISTIC) == b"\x02\x01\x01"
    assert reencrypt_constant(7, MODE_RANDOMIZED) == b"\x07\x00\x02"
    assert encrypt_constant() == b""
    assert encrypt_constant(MODE_RANDOMIZED) == b"\x02"
    with pytest.raises(ProgrammingError, match="mode"):
        reencrypt_constant(1, 3)


def test_grant_helpers_use_the_same_blobs() -> None:
    cell = b"C" * 65
    assert grants.compare("K", TypeCode.INT64, Operator.GE, cell).constant == cell
    assert grants.between("K", TypeCode.INT64, cell, cell).constant == between_constant(cell, cell)
    assert grants.like("K", TypeCode.UTF16LE, cell, "!").constant == like_constant(cell, "!")
    source, target = grants.reencrypt(
        "OLD", "NEW", 4, TypeCode.UTF8, MODE_DETERMINISTIC, source_cek_id=0x0102
    )
    assert (source.cek_name, source.operator, source.constant) == (
        "OLD",
        Operator.REENCRYPT,
        b"\x04\x00\x01",
    )
    # The target gets its own entry naming source and mode, and no ENCRYPT grant.
    assert (target.cek_name, target.operator, target.constant) == (
        "NEW",
        Operator.REENCRYPT_TARGET,
        b"\x02\x01\x01",
    )
    with pytest.raises(ProgrammingError, match="comparison"):
        grants.compare("K", TypeCode.INT64, Operator.RANK, cell)
    with pytest.raises(ProgrammingError, match="aggregate"):
        grants.aggregate("K", TypeCode.INT64, Operator.LIKE)
    with pytest.raises(ProgrammingError, match="LIKE"):
        grants.like("K", TypeCode.INT64, cell)
    with pytest.raises(ProgrammingError, match="operator code"):
        grants.Grant("K", 63, TypeCode.INT64)  # type: ignore[arg-type]
    with pytest.raises(ProgrammingError, match="type code"):
        grants.rank("K", 0)  # type: ignore[arg-type]


# --- through the session: counter, CMK verification ---------------------------------------


class RecordingGateway:
    def __init__(self) -> None:
        self.closed: list[int] = []

    def open_session(self, nonce: bytes, client_ecdh_public: bytes, platform_dir: object) -> None:
        raise AssertionError("not used here")

    def close_session(self, session_id: int) -> None:
        self.closed.append(session_id)


def _session(key: bytearray | None = None) -> tuple[EnclaveSession, RecordingGateway]:
    gateway = RecordingGateway()
    summary = AttestationSummary("service", "00" * 32, 1, False, None, True)
    session = EnclaveSession(
        gateway=gateway,  # type: ignore[arg-type]
        session_id=77,
        session_key=key if key is not None else bytearray(SESSION_KEY),
        summary=summary,
    )
    return session, gateway


@dataclass(frozen=True)
class SignedCmk:
    resolver: ColumnKeyResolver
    arguments: dict[str, object]  # the CMK metadata, as verify_cek takes it
    signature_for_false: bytes  # the same CMK's signature over ENCLAVE_COMPUTATIONS = False


@pytest.fixture(scope="module")
def signed_cmk(tmp_path_factory: pytest.TempPathFactory) -> SignedCmk:
    registry = build_registry(key_directory=tmp_path_factory.mktemp("keys"))
    provider = registry.get("PEM_FILE")
    provider.generate_key("cmk.pem", key_size=2048)
    arguments: dict[str, object] = dict(
        cmk_provider="PEM_FILE",
        cmk_key_path="cmk.pem",
        allow_enclave_computations=True,
        signature=sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", True),
        cmk_name="CMK1",
    )
    return SignedCmk(
        ColumnKeyResolver(registry, CekCache()),
        arguments,
        sign_cmk_metadata(provider, "PEM_FILE", "cmk.pem", False),
    )


def _admit(session: EnclaveSession, signed_cmk: SignedCmk, name: str) -> int:
    return session.verify_cek(name, signed_cmk.resolver, **signed_cmk.arguments)  # type: ignore[arg-type]


def test_the_counter_starts_at_one_and_increases(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    _admit(session, signed_cmk, "CEK1")
    counters = [
        open_package(
            session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])
        ).counter
        for _ in range(4)
    ]
    assert counters == [1, 2, 3, 4]


def test_the_counter_strictly_increases_across_threads(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    _admit(session, signed_cmk, "CEK1")
    per_thread: dict[int, list[int]] = {}
    start = threading.Barrier(6)

    def worker(number: int) -> None:
        start.wait()
        packages = [
            session.package_for("q", {"CEK1": CEK_A}, [grants.group("CEK1", TypeCode.UTF8)])
            for _ in range(20)
        ]
        per_thread[number] = [open_package(package).counter for package in packages]

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [counter for counters in per_thread.values() for counter in counters]
    assert sorted(every) == list(range(1, 121))
    for counters in per_thread.values():
        assert all(a < b for a, b in zip(counters, counters[1:], strict=False))


def test_package_for_fills_in_session_ids_and_hashes(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    assert _admit(session, signed_cmk, "CEK_B") == 1
    assert _admit(session, signed_cmk, "CEK_A") == 2
    assert session.cek_id("CEK_B") == 1
    cell = b"Z" * 65
    package = session.package_for(
        "SELECT a FROM t WHERE a = ?",
        {"CEK_A": CEK_A, "CEK_B": CEK_B},
        [grants.compare("CEK_A", TypeCode.DATE, Operator.EQ, cell), grants.rank("CEK_B", 9)],
    )
    opened = open_package(package)
    assert opened.session_id == 77
    assert opened.statement_hash == utf16_sha256("SELECT a FROM t WHERE a = ?")
    assert sorted((entry[3], entry[4]) for entry in opened.keys) == [(1, CEK_B), (2, CEK_A)]
    assert sorted(opened.authorizations) == [
        (1, 10, 9, hashlib.sha256(b"").digest()),
        (2, 1, 5, hashlib.sha256(cell).digest()),
    ]


def test_a_cek_whose_cmk_was_not_verified_is_refused(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    with pytest.raises(OperationalError, match="'CEK1' was not admitted"):
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])


def test_a_cmk_without_enclave_computations_admits_nothing(signed_cmk: SignedCmk) -> None:
    resolver, cmk = signed_cmk.resolver, signed_cmk.arguments
    session, _ = _session()
    with pytest.raises(OperationalError, match="does not allow enclave computations"):
        session.verify_cek("CEK1", resolver, **{**cmk, "allow_enclave_computations": False})
    with pytest.raises(OperationalError, match="no metadata signature"):
        session.verify_cek("CEK1", resolver, **{**cmk, "signature": None})
    with pytest.raises(OperationalError, match="not admitted"):
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])


def test_a_forged_cmk_signature_admits_nothing(signed_cmk: SignedCmk) -> None:
    resolver, cmk = signed_cmk.resolver, signed_cmk.arguments
    session, _ = _session()
    forged = bytearray(cmk["signature"])  # type: ignore[arg-type]
    forged[10] ^= 1
    with pytest.raises(CellAuthenticationError):
        session.verify_cek("CEK1", resolver, **{**cmk, "signature": bytes(forged)})
    # A signature over "no enclave computations" must not vouch for "enclave computations".
    with pytest.raises(CellAuthenticationError):
        session.verify_cek("CEK1", resolver, **{**cmk, "signature": signed_cmk.signature_for_false})
    with pytest.raises(OperationalError, match="not admitted"):
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])


def test_forget_cek_withdraws_the_admission(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    _admit(session, signed_cmk, "CEK1")
    session.forget_cek("CEK1")
    with pytest.raises(OperationalError, match="not admitted"):
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])
    assert session.cek_id("CEK1") == 1


def test_keys_and_grants_must_match(signed_cmk: SignedCmk) -> None:
    session, _ = _session()
    _admit(session, signed_cmk, "CEK1")
    _admit(session, signed_cmk, "CEK2")
    with pytest.raises(ProgrammingError, match="no grant uses it"):
        session.package_for(
            "q", {"CEK1": CEK_A, "CEK2": CEK_B}, [grants.rank("CEK1", TypeCode.INT64)]
        )
    with pytest.raises(ProgrammingError, match="'CEK2', which is not in"):
        session.package_for(
            "q",
            {"CEK1": CEK_A},
            [grants.rank("CEK1", TypeCode.INT64), grants.rank("CEK2", TypeCode.INT64)],
        )


def test_close_wipes_the_session_key_and_closes_the_enclave_session(signed_cmk: SignedCmk) -> None:
    key = bytearray(SESSION_KEY)
    session, gateway = _session(key)
    _admit(session, signed_cmk, "CEK1")
    session.close()
    session.close()
    assert key == bytearray(32)
    assert gateway.closed == [77]
    with pytest.raises(InterfaceError, match="closed"):
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])
    with pytest.raises(InterfaceError):
        session.cek_id("CEK1")


def test_messages_carry_no_key_bytes(signed_cmk: SignedCmk, tmp_path: Path) -> None:
    session, _ = _session()
    with pytest.raises(OperationalError) as caught:
        session.package_for("q", {"CEK1": CEK_A}, [grants.rank("CEK1", TypeCode.INT64)])
    text = str(caught.value)
    assert CEK_A.hex() not in text and repr(CEK_A) not in text
    assert SESSION_KEY.hex() not in repr(session)

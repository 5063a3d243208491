"""Evidence format v2: the strict parser, the simulated platform key and the appraisal order."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.attestation.appraisal import appraise
from enclave.attestation.evidence import (
    EVIDENCE_MAX_LEN,
    EvidenceError,
    parse_evidence,
)
from enclave.attestation.platform import (
    PLATFORM_DIR_ENV,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    default_platform_dir,
    load_or_create_platform_key,
    platform_public_key,
)
from enclave.attestation.policy import Policy
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave, new_nonce

NONCE = bytes(range(32))
# The right P-384 algorithm identifier, then a BIT STRING far shorter than its header says.
BROKEN_P384_SPKI = bytes.fromhex("3076301006072a8648ce3d020106052b81040022036200") + bytes(8)


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def enclave(platform_dir: Path) -> SimulatedEnclave:
    return SimulatedEnclave(platform_dir)


@pytest.fixture(scope="module")
def good_evidence(enclave: SimulatedEnclave) -> bytes:
    return enclave.evidence(NONCE)


def _policy(platform_dir: Path, **overrides: object) -> Policy:
    data: dict[str, object] = {"allowed_measurements": [DEFAULT_MEASUREMENT.hex()]}
    data.update(overrides)
    return Policy.from_mapping(data, platform_dir=platform_dir)


# --- the simulated platform key -----------------------------------------------------------------


def test_platform_key_is_created_once_with_private_mode(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "platform"
    key = load_or_create_platform_key(folder)
    assert stat.S_IMODE((folder / PRIVATE_KEY_FILE).stat().st_mode) == 0o600
    assert (folder / PUBLIC_KEY_FILE).is_file()
    assert load_or_create_platform_key(folder).private_numbers() == key.private_numbers()
    assert platform_public_key(folder) == key.public_key()


def test_platform_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PLATFORM_DIR_ENV, str(tmp_path))
    assert default_platform_dir() == tmp_path
    load_or_create_platform_key()
    assert (tmp_path / PRIVATE_KEY_FILE).is_file()
    monkeypatch.delenv(PLATFORM_DIR_ENV)
    assert default_platform_dir().parts[-3:] == ("share", "enclavesql", "platform")


def test_platform_key_of_the_wrong_curve_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an ECDSA P-384 private key"):
        load_or_create_platform_key(tmp_path)


# --- parsing ------------------------------------------------------------------------------------


def test_good_evidence_parses_into_its_fields(
    enclave: SimulatedEnclave, good_evidence: bytes
) -> None:
    evidence = parse_evidence(good_evidence)
    assert evidence.measurement == DEFAULT_MEASUREMENT
    assert evidence.svn == 1 and evidence.debug is False and evidence.flags == 0
    assert evidence.nonce == NONCE
    assert evidence.ecdh_public == enclave.ecdh_public
    assert evidence.identity_public_key_der == enclave.identity_public_key_der
    assert evidence.report_data == hashlib.sha256(enclave.identity_public_key_der).digest()
    # The report is everything up to and including ecdh_public: 110 fixed bytes + nonce + 97.
    assert evidence.report == good_evidence[: 4 + 4 + 32 + 4 + 32 + 2 + len(NONCE) + 97]
    assert len(good_evidence) <= EVIDENCE_MAX_LEN


@pytest.mark.parametrize("nonce_len", [16, 256])
def test_nonce_length_bounds_are_inclusive(enclave: SimulatedEnclave, nonce_len: int) -> None:
    nonce = new_nonce(nonce_len)
    assert parse_evidence(enclave.evidence(nonce)).nonce == nonce


@pytest.mark.parametrize(
    ("knobs", "fragment"),
    [
        ({"magic": b"EEV3"}, "magic"),
        ({"magic": b"EEV1"}, "format v1"),
        ({"flags": 2}, "unknown bits"),
        ({"flags": 0x80000001}, "unknown bits"),
        ({"nonce_len": 15}, "nonce_len is 15"),
        ({"nonce_len": 257}, "nonce_len is 257"),
        ({"nonce_len": 33}, "_len is|ends inside"),  # the fields after it shift
        ({"ecdh_public": b"\x02" + bytes(96)}, "uncompressed"),
        ({"ecdh_public": b"\x04" + bytes(96)}, "not a point on P-384"),
        ({"identity_der": b"\x30\x03\x02\x01\x01"}, "not an ECDSA P-384 public key"),
        ({"identity_der": BROKEN_P384_SPKI}, "not a DER SubjectPublicKeyInfo"),
        ({"platform_sig": b""}, "platform_sig_len is 0"),
        ({"platform_sig": bytes(105)}, "platform_sig_len is 105"),
        ({"ecdh_sig": b""}, "ecdh_sig_len is 0"),
        ({"trailing": b"\x00"}, "follow ecdh_sig"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_malformed_fields_are_named(
    enclave: SimulatedEnclave, knobs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(EvidenceError, match=fragment) as caught:
        parse_evidence(enclave.evidence(NONCE, **knobs))  # type: ignore[arg-type]
    assert caught.value.code == "evidence_malformed" and caught.value.status == 400


def test_identity_key_of_another_curve_is_malformed(enclave: SimulatedEnclave) -> None:
    from cryptography.hazmat.primitives import serialization

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(EvidenceError, match="not an ECDSA P-384 public key"):
        parse_evidence(enclave.evidence(NONCE, identity_der=der))


@pytest.mark.parametrize(
    "curve_oid",
    ["2b81040006", "2b81040023"],  # secp112r1 (unsupported by OpenSSL), secp521r1
)
def test_identity_key_naming_another_curve_is_malformed(
    enclave: SimulatedEnclave, curve_oid: str
) -> None:
    p384 = bytes.fromhex("2b81040022")
    der = enclave.identity_public_key_der.replace(p384, bytes.fromhex(curve_oid), 1)
    with pytest.raises(EvidenceError, match="not an ECDSA P-384 public key"):
        parse_evidence(enclave.evidence(NONCE, identity_der=der))


def test_identity_key_of_another_type_is_malformed(enclave: SimulatedEnclave) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    der = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(EvidenceError, match="not an ECDSA P-384 public key"):
        parse_evidence(enclave.evidence(NONCE, identity_der=der))


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_identity_keys_are_malformed_or_mismatched(
    enclave: SimulatedEnclave, data: st.DataObject
) -> None:
    der = bytearray(enclave.identity_public_key_der)
    position = data.draw(st.integers(0, len(der) - 1))
    der[position] ^= data.draw(st.integers(1, 255))
    try:
        parse_evidence(enclave.evidence(NONCE, identity_der=bytes(der)))
    except EvidenceError as error:
        assert error.code == "evidence_malformed"


def test_every_truncation_is_malformed(good_evidence: bytes) -> None:
    for length in range(len(good_evidence)):
        with pytest.raises(EvidenceError) as caught:
            parse_evidence(good_evidence[:length])
        assert caught.value.code == "evidence_malformed"


def test_a_length_prefix_pointing_past_the_end_is_malformed(good_evidence: bytes) -> None:
    evidence = parse_evidence(good_evidence)
    offset = len(evidence.report)
    broken = good_evidence[:offset] + struct.pack("<H", 104) + good_evidence[offset + 2 :]
    if broken == good_evidence:  # the signature happened to be 104 bytes long
        broken = good_evidence[:offset] + struct.pack("<H", 8) + good_evidence[offset + 2 :]
    with pytest.raises(EvidenceError) as caught:
        parse_evidence(broken)
    assert caught.value.code == "evidence_malformed"


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=700))
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_evidence(data)


def test_error_messages_carry_no_evidence_bytes(enclave: SimulatedEnclave) -> None:
    nonce = b"\xab" * 32
    for knobs in ({"magic": b"XXXX"}, {"nonce_len": 300}, {"trailing": b"\xcd" * 4}):
        with pytest.raises(EvidenceError) as caught:
            parse_evidence(enclave.evidence(nonce, **knobs))  # type: ignore[arg-type]
        message = str(caught.value).lower()
        assert "abab" not in message and "cdcd" not in message and "xxxx" not in message


# --- appraisal: one broken field, one named check -------------------------------------------------


def test_appraisal_accepts_good_evidence(platform_dir: Path, good_evidence: bytes) -> None:
    assert appraise(good_evidence, _policy(platform_dir)).nonce == NONCE


@pytest.mark.parametrize(
    ("knobs", "code"),
    [
        ({"svn": 0}, "svn"),
        ({"measurement": bytes(32)}, "measurement"),
        ({"flags": 1}, "debug"),
        ({"report_data": bytes(32)}, "identity_binding"),
        ({"ecdh_signing_key": ec.generate_private_key(ec.SECP384R1())}, "ecdh_signature"),
        ({"platform_key": ec.generate_private_key(ec.SECP384R1())}, "platform_signature"),
    ],
    ids=["svn", "measurement", "debug", "identity_binding", "ecdh_signature", "platform"],
)
def test_appraisal_names_the_broken_check(
    platform_dir: Path, enclave: SimulatedEnclave, knobs: dict[str, object], code: str
) -> None:
    with pytest.raises(EvidenceError) as caught:
        appraise(enclave.evidence(NONCE, **knobs), _policy(platform_dir, min_svn=1))  # type: ignore[arg-type]
    assert caught.value.code == code and caught.value.status == 403


def test_appraisal_reports_the_first_failed_check(
    platform_dir: Path, enclave: SimulatedEnclave
) -> None:
    # Measurement, svn and debug are all wrong: the documented order reports the measurement.
    evidence = enclave.evidence(NONCE, measurement=bytes(32), svn=0, flags=1)
    with pytest.raises(EvidenceError) as caught:
        appraise(evidence, _policy(platform_dir, min_svn=1))
    assert caught.value.code == "measurement"


def test_a_second_trusted_platform_key_is_accepted(platform_dir: Path, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other = SimulatedEnclave(other_dir)
    load_or_create_platform_key(other_dir)
    pem_paths = [str(platform_dir / PUBLIC_KEY_FILE), str(other_dir / PUBLIC_KEY_FILE)]
    policy = _policy(platform_dir, trusted_platform_keys=pem_paths)
    with pytest.raises(EvidenceError, match="trusted platform key"):
        appraise(other.evidence(NONCE), _policy(platform_dir))
    assert appraise(other.evidence(NONCE), policy).measurement == DEFAULT_MEASUREMENT


def test_simulated_enclave_uses_the_platform_directory(tmp_path: Path) -> None:
    SimulatedEnclave(tmp_path).evidence(os.urandom(16))
    assert (tmp_path / PRIVATE_KEY_FILE).is_file()

"""Fuzz target: evidence v2, `parse_evidence` then the service's whole `appraise`, against a
policy trusting this process's simulated platform key (made in a temporary directory).

Only `EvidenceError` may escape, and accepted evidence must be the simulated enclave's. It must
never touch the user's real platform directory.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from enclave.attestation.appraisal import appraise
from enclave.attestation.evidence import EvidenceError, identity_hash, parse_evidence
from enclave.attestation.platform import platform_public_key
from enclave.attestation.policy import Policy
from tests.support.simulated_evidence import DEFAULT_MEASUREMENT, SimulatedEnclave

_directory = Path(tempfile.mkdtemp(prefix="enclavesql-fuzz-platform-"))
atexit.register(shutil.rmtree, _directory, True)
ENCLAVE = SimulatedEnclave(_directory)
NONCE = bytes(range(32))
VALID = ENCLAVE.evidence(NONCE)
POLICY = Policy(
    allowed_measurements=frozenset({DEFAULT_MEASUREMENT}),
    min_svn=1,
    allow_debug=False,
    trusted_platform_keys=(platform_public_key(_directory),),
)

# The first byte's low bit: 0 means the rest is the evidence, 1 means the rest is a list of
# (u16 position, xor byte) patches applied to a valid evidence.
RAW = 0
FLIP = 1


def seeds() -> Iterable[bytes]:
    debug = ENCLAVE.evidence(NONCE, flags=1)
    long_nonce = ENCLAVE.evidence(bytes(256))
    return [
        bytes([RAW]) + VALID,
        bytes([RAW]) + debug,
        bytes([RAW]) + long_nonce,
        bytes([RAW]) + VALID[:80],
        bytes([FLIP]) + struct.pack("<HB", 76, 1),
        bytes([FLIP]) + struct.pack("<HB", len(VALID) - 1, 0x80),
    ]


def evidence_from(data: bytes) -> bytes:
    """The evidence an input stands for.

    >>> evidence_from(bytes([RAW]) + b"EEV2") == b"EEV2"
    True
    >>> evidence_from(bytes([FLIP])) == VALID
    True
    """
    if not data or not data[0] & FLIP:
        return data[1:]
    patched = bytearray(VALID)
    rest = data[1:]
    for at in range(0, len(rest) - 2, 3):
        position, value = struct.unpack_from("<HB", rest, at)
        patched[position % len(patched)] ^= value
    return bytes(patched)


def test_one_input(data: bytes) -> None:
    """Parse and appraise; only EvidenceError may escape.

    >>> test_one_input(bytes([RAW]) + VALID)
    >>> test_one_input(bytes([FLIP]) + struct.pack("<HB", 0, 1))
    """
    evidence = evidence_from(data)
    try:
        parse_evidence(evidence)
        accepted = appraise(evidence, POLICY)
    except EvidenceError as error:
        assert error.code and error.reason and 400 <= error.status < 500
        return
    # Appraisal passed, so the platform signed this report and the identity key is bound to it.
    assert accepted.measurement == DEFAULT_MEASUREMENT
    assert accepted.report_data == identity_hash(accepted.identity_public_key_der)

"""Appraisal: runs every check of evidence v2 against a policy, in the documented order.

It returns the parsed evidence when all checks pass and raises `EvidenceError` naming the first
check that failed. It must not issue tokens, do I/O or log evidence bytes.
"""

from __future__ import annotations

from enclave.attestation.evidence import (
    Evidence,
    EvidenceError,
    parse_evidence,
    verify_ecdh_signature,
    verify_identity_binding,
    verify_platform_signature,
)
from enclave.attestation.policy import Policy

# The order of the checks, as documented; each name is the `error` code of the HTTP answer.
CHECKS = (
    "evidence_malformed",
    "platform_signature",
    "measurement",
    "svn",
    "debug",
    "identity_binding",
    "ecdh_signature",
)


def appraise(data: bytes, policy: Policy) -> Evidence:
    """Parse `data` and check it against `policy`; return the evidence or raise `EvidenceError`.

    >>> from enclave.attestation.policy import Policy
    >>> policy = Policy(frozenset(), 0, False, ())
    >>> appraise(b"EEV2", policy)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    enclave.attestation.evidence.EvidenceError: the evidence ends inside the fixed report header...
    """
    evidence = parse_evidence(data)
    verify_platform_signature(evidence, policy.trusted_platform_keys)
    if evidence.measurement not in policy.allowed_measurements:
        raise EvidenceError(
            "measurement",
            "the enclave measurement is not in allowed_measurements; add it to the policy if "
            "this enclave build should be trusted",
            403,
        )
    if evidence.svn < policy.min_svn:
        raise EvidenceError(
            "svn",
            f"the enclave security version {evidence.svn} is below min_svn {policy.min_svn}; "
            "update the enclave",
            403,
        )
    if evidence.debug and not policy.allow_debug:
        raise EvidenceError(
            "debug",
            "the enclave is a debug build and the policy does not set allow_debug",
            403,
        )
    verify_identity_binding(evidence)
    verify_ecdh_signature(
        evidence.identity_public_key_der,
        evidence.ecdh_public,
        evidence.nonce,
        evidence.ecdh_signature,
    )
    return evidence

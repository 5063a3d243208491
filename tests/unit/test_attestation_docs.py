"""docs/attestation.md stays true: every check, claim, option and policy key it must name, in the
order the code runs them; and the doctests of the attestation modules pass."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

from enclave.attestation import appraisal, evidence, policy, service
from engine.client import attestation

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "attestation.md").read_text(encoding="utf-8")
MODULES = (
    "enclave.attestation.platform",
    "enclave.attestation.evidence",
    "enclave.attestation.policy",
    "enclave.attestation.appraisal",
    "enclave.attestation.service",
    "engine.client.attestation",
    "engine.client.session_key",
)


def test_service_error_codes_are_documented_in_order() -> None:
    section = DOC.split("### Checks on `POST /attest`", 1)[1].split("### Token claims", 1)[0]
    rows = re.findall(r"^\| (\d) \| .*? \| `(\w+)` \|", section, flags=re.MULTILINE)
    assert [code for _, code in rows] == ["bad_request", *appraisal.CHECKS]


def test_client_checks_are_documented_in_order() -> None:
    items = re.findall(r"^(\d)\. \*\*(.+?)\*\*", DOC, flags=re.MULTILINE)
    assert [name for _, name in items] == list(attestation.CHECKS)
    assert [int(number) for number, _ in items] == list(range(1, len(attestation.CHECKS) + 1))


def test_claims_match_between_service_client_and_docs() -> None:
    names = [name for name in dir(service) if name.startswith("CLAIM_")]
    assert len(names) == 5
    for name in names:
        assert getattr(service, name) == getattr(attestation, name)
        assert f"| `{getattr(service, name)}` |" in DOC


def test_every_cli_option_is_documented() -> None:
    options = [
        option
        for action in service._parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    assert len(options) == 5
    for option in options:
        assert f"- `{option}`" in DOC


def test_every_policy_key_is_documented() -> None:
    for key in policy.KNOWN_KEYS:
        assert f"| `{key}` |" in DOC


def test_documented_sizes_match_the_code() -> None:
    assert f"{evidence.EVIDENCE_MAX_LEN:,} bytes" in DOC
    assert f"{service.MAX_BODY_LEN:,} bytes" in DOC
    assert f"| 1 to {evidence.SIGNATURE_MAX_LEN} |" in DOC
    assert f"| 1 to {evidence.IDENTITY_MAX_LEN} |" in DOC


def test_the_simulation_caveat_is_stated() -> None:
    assert "## What simulation does not protect" in DOC
    assert "can forge evidence" in DOC


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no doctest example"

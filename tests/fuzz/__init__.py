"""The atheris fuzz targets and their registry; `python -m tests.fuzz` runs them (see __main__).

Each target module has `test_one_input(data: bytes)`, which may raise only what its docstring
allows, and `seeds()`. This package must stay cheap to import (no engine, enclave or atheris):
the worker imports targets under instrumentation, and anything imported earlier escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "DEFAULT_TARGETS", "target_named"]


@dataclass(frozen=True)
class Target:
    """One fuzz target: its module, the packages atheris instruments for it, the input size cap."""

    name: str
    module: str
    instrument: tuple[str, ...]
    max_len: int
    # False for targets that exist to test the runner itself; `--target` still runs them.
    default: bool = True


TARGETS: tuple[Target, ...] = (
    Target("sql", "tests.fuzz.sql_front_end", ("engine.sql", "sqlglot", "tests.fuzz"), 2048),
    Target(
        "envelope",
        "tests.fuzz.cek_envelope_parser",
        ("engine.client.cek_envelope", "engine.client.keystores", "tests.fuzz"),
        1024,
    ),
    Target(
        "evidence", "tests.fuzz.attestation_evidence", ("enclave.attestation", "tests.fuzz"), 1400
    ),
    Target(
        "token",
        "tests.fuzz.attestation_token",
        ("engine.client.attestation", "jwt", "tests.fuzz"),
        2048,
    ),
    Target("codec", "tests.fuzz.cell_codec", ("tests.unit.test_codec_fuzz", "tests.fuzz"), 400),
    Target("cell_keys", "tests.fuzz.cell_round_trip", ("enclave.binding", "tests.fuzz"), 600),
    Target("enclave", "tests.fuzz.enclave_header", ("enclave.binding", "tests.fuzz"), 2048),
    Target(
        "enclave_expression",
        "tests.fuzz.enclave_expression",
        ("enclave.binding", "engine.client.enclave_package", "tests.fuzz"),
        1024,
    ),
    Target("selftest_crash", "tests.fuzz.selftest_crash", ("tests.fuzz",), 64, default=False),
)

DEFAULT_TARGETS: tuple[Target, ...] = tuple(target for target in TARGETS if target.default)


def target_named(name: str) -> Target:
    """The registered target called `name`.

    >>> target_named("sql").module
    'tests.fuzz.sql_front_end'
    >>> target_named("nope")
    Traceback (most recent call last):
    ...
    KeyError: "no fuzz target 'nope'; known: sql, envelope, evidence, token, codec, cell_keys, \
enclave, enclave_expression, selftest_crash"
    """
    for target in TARGETS:
        if target.name == name:
            return target
    known = ", ".join(target.name for target in TARGETS)
    raise KeyError(f"no fuzz target {name!r}; known: {known}")

"""Differential tests: every ``tests/sql/*.test`` file gives the same answers on EnclaveSQL as on
plaintext DuckDB, and a hypothesis property does the same for random deterministic predicates."""

from __future__ import annotations

import datetime
import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.client.enclave_session import InsecureEnclaveWarning
from engine.client.keystores import build_registry
from tests.sql.differential import Differential, Record, normalize_rows, parse_test_file

HERE = Path(__file__).resolve().parent
TEST_FILES = sorted(HERE.glob("*.test"))


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two PEM CMKs made once per session (RSA key generation is the slow part)."""
    directory = tmp_path_factory.mktemp("cmks")
    provider = build_registry(key_directory=directory).get("PEM_FILE")
    for name in ("cmk1.pem", "cmk_enclave.pem"):
        provider.generate_key(name, key_size=2048)
    return {name: directory / name for name in ("cmk1.pem", "cmk_enclave.pem")}


def test_there_are_test_files() -> None:
    assert len(TEST_FILES) >= 3


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_file_matches_plaintext_duckdb(
    path: Path,
    tmp_path: Path,
    key_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    records = parse_test_file(path)
    assert any(r.kind == "query" for r in records)
    options: dict[str, Any] = {}
    if path.name.startswith("enclave_service_"):
        # An attested session: the attestation service on loopback allows the built enclave.
        url, platform = request.getfixturevalue("attestation_service")
        monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(platform))
        options.update(attestation_protocol="service", attestation_url=url)
    elif path.name.startswith("enclave_"):
        # Enclave queries need a session; protocol 'none' skips attestation (and warns).
        monkeypatch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
        options["attestation_protocol"] = "none"
    harness = Differential(tmp_path, key_files, **options)
    try:
        assert harness.connection.enclave_available == bool(options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InsecureEnclaveWarning)
            for record in records:
                harness.run(record, f"{path.name}:{record.line}")
    finally:
        harness.close()
    insecure = [w for w in caught if issubclass(w.category, InsecureEnclaveWarning)]
    # Protocol 'none' warns once per connection (at its first enclave query); 'service' never.
    assert len(insecure) == (options.get("attestation_protocol") == "none")
    for other in caught:
        if not issubclass(other.category, InsecureEnclaveWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)


@pytest.fixture(scope="module")
def attestation_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The attestation service on loopback, allowing the measurement of the built enclave."""
    from enclave.attestation.policy import Policy
    from enclave.attestation.service import start_in_thread
    from enclave.binding import enclave_info

    platform = tmp_path_factory.mktemp("platform")
    policy = Policy.from_mapping(
        {"allowed_measurements": [enclave_info().measurement.hex()], "min_svn": 1},
        platform_dir=platform,
    )
    url, stop = start_in_thread(policy)
    yield url, platform
    stop()


def test_the_harness_sees_a_wrong_answer(tmp_path: Path, key_files: dict[str, Path]) -> None:
    """A query whose answers differ must fail, or the comparisons prove nothing."""
    harness = Differential(tmp_path, key_files)
    try:
        harness.oracle.execute("CREATE TABLE t (a INT)")
        harness.connection.execute("CREATE TABLE t (a INT)")
        harness.oracle.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(AssertionError, match="disagree"):
            harness.run(Record("query", 1, "SELECT a FROM t"), "canary")
        with pytest.raises(AssertionError, match="expected ProgrammingError"):
            harness.run(Record("error", 2, "SELECT a FROM t", None, "ProgrammingError"), "x")
    finally:
        harness.close()


def test_unordered_comparison_is_a_multiset() -> None:
    assert normalize_rows([(1,), (1,), (2,)], False) != normalize_rows([(1,), (2,), (2,)], False)
    assert normalize_rows([(2,), (1,)], False) == normalize_rows([(1,), (2,)], False)
    assert normalize_rows([(2,), (1,)], True) != normalize_rows([(1,), (2,)], True)


# The property: random tables, values and deterministic predicates.

_TYPES = {
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "VARCHAR": st.text(alphabet="aAé漢😀 -'", max_size=6),
    "DATE": st.dates(),
    "DECIMAL(9,3)": st.decimals(-999_999, 999_999, places=3, allow_nan=False),
    "BOOLEAN": st.booleans(),
}
_tables = itertools.count()


def _literal(value: object) -> str:
    """``value`` as a SQL literal of its column type."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, str, list[object], list[tuple[str, list[object]]]]:
    """A column type and encryption, a small domain of values with repeats and NULLs, and
    predicates: comparisons with ? for DETERMINISTIC, only IS [NOT] NULL for RANDOMIZED."""
    type_name = draw(st.sampled_from(sorted(_TYPES)))
    encryption = draw(st.sampled_from(["DETERMINISTIC", "DETERMINISTIC", "RANDOMIZED"]))
    domain = draw(st.lists(_TYPES[type_name], min_size=1, max_size=5, unique=True))
    values = draw(st.lists(st.one_of(st.none(), st.sampled_from(domain)), max_size=25))
    probes = st.one_of(st.sampled_from(domain), _TYPES[type_name])
    forms = ["=", "<>", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
    if encryption == "RANDOMIZED":
        forms = ["IS NULL", "IS NOT NULL"]
    predicates = []
    for _ in range(draw(st.integers(1, 4))):
        form = draw(st.sampled_from(forms))
        # Literals are lifted out by the client; parameters are bound as they are.
        inline = draw(st.booleans())
        if form in ("=", "<>", "IN", "NOT IN"):
            items = (
                [draw(probes)]
                if form in ("=", "<>")
                else draw(st.lists(probes, min_size=1, max_size=3))
            )
            marks = [_literal(item) if inline else "?" for item in items]
            text = marks[0] if form in ("=", "<>") else f"({', '.join(marks)})"
            predicates.append((f"v {form} {text}", [] if inline else items))
        else:
            predicates.append((f"v {form}", []))
    return type_name, encryption, values, predicates


@pytest.fixture(scope="module")
def property_harness(
    tmp_path_factory: pytest.TempPathFactory, key_files: dict[str, Path]
) -> Differential:
    harness = Differential(tmp_path_factory.mktemp("property"), key_files)
    yield harness
    harness.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_cases())
def test_random_deterministic_predicates_match(
    property_harness: Differential,
    case: tuple[str, str, list[object], list[tuple[str, list[object]]]],
) -> None:
    type_name, encryption, values, predicates = case
    table = f"prop_{next(_tables)}"
    encrypted = (
        f"CREATE TABLE {table} (id INTEGER, v {type_name} ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY "
        f"= cek1, ENCRYPTION_TYPE = {encryption}, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
    )
    harness = property_harness
    harness.connection.execute(encrypted)
    harness.oracle.execute(f"CREATE TABLE {table} (id INTEGER, v {type_name})")
    rows = [(number, value) for number, value in enumerate(values)]
    if rows:
        harness.connection.cursor().executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)
        harness.oracle.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)
    for predicate, params in predicates:
        sql = f"SELECT id, v FROM {table} WHERE {predicate}"
        ours = harness.connection.execute(sql, params).fetchall()
        theirs = harness.oracle.execute(sql, params).fetchall()
        assert normalize_rows(ours, False) == normalize_rows(theirs, False), (sql, params)
    grouped = (
        f"SELECT v, count(*) FROM {table} GROUP BY v"
        if encryption == "DETERMINISTIC"
        else f"SELECT count(v), count(*) FROM {table}"
    )
    assert normalize_rows(harness.connection.execute(grouped).fetchall(), False) == (
        normalize_rows(harness.oracle.execute(grouped).fetchall(), False)
    )

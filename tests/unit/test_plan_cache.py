"""The client's plan templates: a statement whose literals were lifted is described once per
shape, later runs with other literal values fill the template and answer as plaintext DuckDB
does, and other literal types, a changed catalog or ambiguous literals never reuse a plan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.client.plan_templates import LiteralToken, PlanTemplates, scan_literals
from engine.host.enclave_gateway import native_enclave_available
from engine.sql.plan import EnclaveOperation, EncryptionTarget, ParameterSpec, Plan
from tests.support.keys import make_pem_keys

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
PLAIN_TABLE = "CREATE TABLE t (id INTEGER, ssn VARCHAR, code INTEGER, amount BIGINT)"
TABLE = (
    f"CREATE TABLE t (id INTEGER, ssn VARCHAR {ENC.format('DETERMINISTIC')}, "
    f"code INTEGER {ENC.format('DETERMINISTIC')}, amount BIGINT {ENC.format('RANDOMIZED')})"
)
ROWS = [(i, f"S'{i % 7}", i % 5 - 2, i * 3 - 20) for i in range(40)] + [(99, None, None, None)]
# String literals for the lifted ssn: the stored values (with a quote inside) and others.
SSNS = st.one_of(
    st.sampled_from(sorted({r[1] for r in ROWS if r[1] is not None})),
    st.text(alphabet="Sab'19 _", max_size=6),
)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plan-cache-keys")
    return make_pem_keys(directory, "cmk.pem")


def _connect(key_dir: Path, **options: object) -> engine.Connection:
    con = engine.connect(":memory:", key_dir=str(key_dir), **options)
    enclave = ", ENCLAVE_COMPUTATIONS" if options.get("attestation_protocol") else ""
    con.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        f"KEY_PATH = 'cmk.pem'{enclave})"
    )
    con.execute(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    con.execute(TABLE)
    con.cursor().executemany("INSERT INTO t VALUES (?, ?, ?, ?)", ROWS)
    return con


@pytest.fixture(scope="module")
def connection(key_dir: Path) -> Iterator[engine.Connection]:
    con = _connect(key_dir)
    yield con
    con.close()


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute(PLAIN_TABLE)
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", ROWS)
    yield con
    con.close()


def _describes(con: engine.Connection) -> int:
    return int(con._client.describes)


def _answer(con: engine.Connection | duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ssn=SSNS, code=st.integers(-3, 3), low=st.integers(-5, 200))
def test_random_literals_answer_as_plaintext_with_one_describe(
    connection: engine.Connection,
    oracle: duckdb.DuckDBPyConnection,
    ssn: str,
    code: int,
    low: int,
) -> None:
    sql = (
        f"SELECT id, ssn, amount FROM t WHERE (ssn = {_quoted(ssn)} OR code = {code}) "
        f"AND id < {low} ORDER BY id"
    )
    # Warm the shape (a describe and its probe), then this run must not describe at all.
    warm = "SELECT id, ssn, amount FROM t WHERE (ssn = 'w' OR code = 9) AND id < 1 ORDER BY id"
    connection.execute(warm).fetchall()
    before = _describes(connection)
    assert connection.execute(sql).fetchall() == oracle.execute(sql).fetchall()
    # id < {low} is not lifted (id is plaintext): a new value of it is a new template (a
    # describe, a probe, and one more when two literals are equal). The lifted ssn and code
    # never make a new one.
    connection.execute(sql).fetchall()
    assert _describes(connection) - before <= 3
    other = sql.replace(_quoted(ssn), _quoted(ssn + "x"), 1)
    described = _describes(connection)
    assert _answer(connection, other) == _answer(oracle, other)
    assert _describes(connection) == described


def test_second_run_with_other_values_does_not_describe(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection
) -> None:
    first = "SELECT id FROM t WHERE ssn = 'S''3' AND code = -1"
    assert _answer(connection, first) == _answer(oracle, first)
    described = _describes(connection)
    hits = connection._client.templates.hits
    # (A minus sign is part of the shape: code = 2 would be another statement.)
    for ssn, code in [("S'4", -2), ("S'0", -2), ("nobody", -3), ("S'6", -1)]:
        sql = f"SELECT id FROM t WHERE ssn = {_quoted(ssn)} AND code = {code}"
        assert _answer(connection, sql) == _answer(oracle, sql)
    assert _describes(connection) == described
    assert connection._client.templates.hits == hits + 4
    # The host saw the same lifted text each time: its describe cache hit too.
    assert connection._host.statistics()["describe_misses"] > 0


def test_another_literal_type_is_described_again(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection
) -> None:
    number = "SELECT id FROM t WHERE code = 1"
    assert _answer(connection, number) == _answer(oracle, number)
    described = _describes(connection)
    text = "SELECT id FROM t WHERE code = '2'"  # a string for the INTEGER column
    assert _answer(connection, text) == _answer(oracle, text)
    assert _describes(connection) > described
    decimal = "SELECT id FROM t WHERE code = 2.0"
    described = _describes(connection)
    assert _answer(connection, decimal) == _answer(oracle, decimal)
    assert _describes(connection) > described


def test_equal_literals_are_told_apart(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection
) -> None:
    # Two equal lifted literals, and a lifted literal equal to a plaintext one: the template
    # must still feed each ? from its own token.
    first = (
        "SELECT id FROM t WHERE (ssn = 'S''1' OR ssn = 'S''1' OR code = 1) AND id > 1 AND id <> 1"
    )
    assert _answer(connection, first) == _answer(oracle, first)
    described = _describes(connection)
    for a, b, code in [("S'2", "S'3", 2), ("S'0", "nobody", 0), ("x", "S'6", 1)]:
        sql = (
            f"SELECT id FROM t WHERE (ssn = {_quoted(a)} OR ssn = {_quoted(b)} OR "
            f"code = {code}) AND id > 1 AND id <> 1"
        )
        assert _answer(connection, sql) == _answer(oracle, sql)
    assert _describes(connection) == described


def test_a_changed_catalog_does_not_reuse_a_template(key_dir: Path) -> None:
    con = _connect(key_dir)
    try:
        sql = "SELECT id FROM t WHERE ssn = 'S''1' ORDER BY id"
        assert con.execute(sql).fetchall() == [(i,) for i in range(1, 40, 7)]
        con.execute("DROP TABLE t")
        con.execute(PLAIN_TABLE)  # ssn is plaintext now: nothing may be encrypted for it
        con.execute("INSERT INTO t VALUES (1, 'S''1', 0, 0), (2, 'other', 0, 0)")
        described = _describes(con)
        assert con.execute("SELECT id FROM t WHERE ssn = 'S''2' ORDER BY id").fetchall() == []
        assert con.execute(sql).fetchall() == [(1,)]
        assert _describes(con) > described
    finally:
        con.close()


@pytest.mark.skipif(not native_enclave_available(), reason="the native enclave is not built")
@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_enclave_constants_are_filled_per_execution(
    key_dir: Path, oracle: duckdb.DuckDBPyConnection
) -> None:
    con = _connect(key_dir, attestation_protocol="none")
    try:
        first = "SELECT id FROM t WHERE amount > -5 AND ssn = 'S''2'"
        assert _answer(con, first) == _answer(oracle, first)
        described = _describes(con)
        # Each run's package authorizes its own constants; a stale one would give wrong rows.
        for low, ssn in [(-40, "S'2"), (-20, "S'0"), (-1, "S'5"), (-18, "S'1")]:
            sql = f"SELECT id FROM t WHERE amount > {low} AND ssn = {_quoted(ssn)}"
            assert _answer(con, sql) == _answer(oracle, sql)
        assert _describes(con) == described
    finally:
        con.close()


# The templates on their own.


def test_scan_literals_marks_kinds_and_refuses_what_it_cannot_model() -> None:
    shape, tokens = scan_literals("SELECT \"a'b\", x1 FROM t WHERE s = 'it''s' AND n = -1.5e3")
    assert shape == 'SELECT "a\'b", x1 FROM t WHERE s = \x00string AND n = -\x00dec'
    assert [t.value() for t in tokens] == ["it's", -1500]
    for text in ["SELECT 'a\\b'", "SELECT $1", "SELECT 1_000", "SELECT 'open", "/* c */ SELECT 1"]:
        assert scan_literals(text) is None
    assert scan_literals("SELECT 1")[0] != scan_literals("SELECT '1'")[0]  # type: ignore[index]


def _plan_for(value: object) -> Plan:
    target = EncryptionTarget("t", "ssn", "cek1", "DETERMINISTIC", "VARCHAR")
    operation = EnclaveOperation(target, "GT", "INT64", (("literal", value),))
    return Plan(
        "query",
        "SELECT ? WHERE x = 1",
        (
            ParameterSpec(("literal", value), target),
            ParameterSpec(("enclave_cek", operation), None),
        ),
        enclave_operations=(operation,),
    )


def test_a_template_keeps_no_plaintext_and_refills_every_place() -> None:
    templates = PlanTemplates()
    text = "SELECT 'CANARY-TEMPLATE' WHERE x = 1"
    assert templates.remember(text, (1,), _plan_for("CANARY-TEMPLATE"))
    assert "CANARY-TEMPLATE" not in repr(templates._entries)
    again = templates.lookup("SELECT 'other' WHERE x = 1", (1,))
    assert again == _plan_for("other")
    # The non-lifted literal 1 is part of the statement: another value is another statement.
    assert templates.lookup("SELECT 'other' WHERE x = 2", (1,)) is None


def test_a_synthesized_value_fails_the_probe() -> None:
    templates = PlanTemplates()
    # A "describe" whose plan holds 'a' whatever the text says: the probe catches it.
    assert not templates.remember("SELECT 'a'", (1,), _plan_for("a"), lambda t: _plan_for("a"))
    assert templates.lookup("SELECT 'b'", (1,)) is None
    assert templates.remember("SELECT 'a'", (1,), _plan_for("a"), lambda t: _plan_for("~0~a"))


def test_negative_numbers_keep_their_sign() -> None:
    templates = PlanTemplates()
    assert templates.remember("SELECT -7 WHERE x = 1", (1,), _plan_for(-7))
    assert templates.lookup("SELECT -3 WHERE x = 1", (1,)) == _plan_for(-3)
    assert LiteralToken("int", "3", negated=True).value() == -3


def test_a_shape_that_never_repeats_stops_paying_for_the_probe() -> None:
    templates = PlanTemplates()
    probes: list[str] = []

    def describe(text: str) -> Plan:
        probes.append(text)
        return _plan_for(text.split("'")[1])

    # x = <n> is not lifted: every n is another statement, and none comes back.
    kept = [
        templates.remember(f"SELECT 'v' WHERE x = {n}", (1,), _plan_for("v"), describe)
        for n in range(8)
    ]
    assert kept == [True] * 4 + [False] * 4
    assert len(probes) == 4  # no probe once the shape proved volatile
    # A shape that is reused keeps its templates.
    assert templates.lookup("SELECT 'w' WHERE x = 2", (1,)) == _plan_for("w")


def test_long_in_lists_are_templated(
    connection: engine.Connection, oracle: duckdb.DuckDBPyConnection
) -> None:
    def sql(values: list[str]) -> str:
        return f"SELECT id FROM t WHERE ssn IN ({', '.join(_quoted(v) for v in values)})"

    first = sql([f"S'{i}" if i < 3 else f"none {i}" for i in range(200)])
    assert _answer(connection, first) == _answer(oracle, first)
    described = _describes(connection)
    second = sql([f"S'{i}" if i in (4, 6) else f"other {i}" for i in range(200)])
    assert _answer(connection, second) == _answer(oracle, second) != []
    assert _describes(connection) == described


@pytest.mark.skipif(not native_enclave_available(), reason="the native enclave is not built")
@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_integer_literals_on_a_decimal_column_are_templated(key_dir: Path) -> None:
    # TPC-H Q6 writes `l_quantity < 24` on DECIMAL(15,2): the literal is already exact, so it
    # stays as written (not 24.00, a value no token of the text holds) and the plan, with its
    # two-bound range merged into BETWEEN, is reused for other values.
    con = _connect(key_dir, attestation_protocol="none")
    oracle = duckdb.connect()
    try:
        con.execute(f"CREATE TABLE m (id INTEGER, q DECIMAL(15,2) {ENC.format('RANDOMIZED')})")
        oracle.execute("CREATE TABLE m (id INTEGER, q DECIMAL(15,2))")
        rows = [(i, (i * 37 % 500) / 10) for i in range(60)] + [(99, None)]
        con.cursor().executemany("INSERT INTO m VALUES (?, ?)", rows)
        oracle.executemany("INSERT INTO m VALUES (?, ?)", rows)
        shape = "SELECT id FROM m WHERE q >= {} AND q < {} AND q <> {} ORDER BY id"
        first = shape.format(3, 24, 7)
        assert _answer(con, first) == _answer(oracle, first)
        described = _describes(con)
        for low, high, other in [(10, 30, 12), (0, 5, 4), (44, 49, 45), (20, 20, 1)]:
            sql = shape.format(low, high, other)
            assert _answer(con, sql) == _answer(oracle, sql)
        assert _describes(con) == described
    finally:
        con.close()
        oracle.close()


@pytest.mark.skipif(not native_enclave_available(), reason="the native enclave is not built")
@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_a_shape_that_never_becomes_a_template_stops_being_probed(
    key_dir: Path, oracle: duckdb.DuckDBPyConnection
) -> None:
    # ORDER BY <encrypted> ... LIMIT n: the value of n also sits in the stage-two SQL, so no
    # template rebuilds the plan. Each failed attempt costs a probe (a second describe); after
    # two, the shape is described once per run, and every answer is still right.
    con = _connect(key_dir, attestation_protocol="none")
    try:
        counts = []
        for limit in (3, 5, 7, 9, 4):
            sql = f"SELECT id, amount FROM t ORDER BY amount DESC, id LIMIT {limit}"
            before = _describes(con)
            assert _answer(con, sql) == _answer(oracle, sql)
            counts.append(_describes(con) - before)
        assert counts == [2, 2, 1, 1, 1]
    finally:
        con.close()

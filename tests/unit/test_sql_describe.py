"""describe(): plans for queries, DML, table DDL and key DDL against the fixture catalog."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql import (
    AddCekValue,
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    CreateCek,
    CreateCmk,
    DropCek,
    DropCekValue,
    DropCmk,
    DropEncryptedColumns,
    Encryption,
    Plan,
    RegisterEncryptedColumn,
    TableInfo,
    check_parameter_count,
    describe,
    describe_sql,
    parse_statements,
)
from tests.sql.fixtures.catalog import CATALOG, plaintext_db


def plan_of(sql: str, *, enclave: bool = False, catalog: CatalogSnapshot = CATALOG) -> Plan:
    (statement,) = parse_statements(sql)
    return describe(statement, catalog, enclave_available=enclave)


# ---- queries -------------------------------------------------------------------------------


def test_result_columns_say_what_to_decrypt() -> None:
    plan = plan_of("SELECT id, ssn, salary, COUNT(*) OVER () AS n FROM patients")
    columns = {c.name: c for c in plan.result_columns}
    assert columns["id"].target is None and columns["id"].declared_type == "INTEGER"
    assert columns["n"].target is None and columns["n"].declared_type is None
    ssn = columns["ssn"].target
    assert ssn is not None
    assert (ssn.table, ssn.column, ssn.cek_name, ssn.encryption_type, ssn.declared_type) == (
        "patients",
        "ssn",
        "cek_det",
        "DETERMINISTIC",
        "CHAR(11)",
    )
    assert columns["salary"].target is not None
    assert columns["salary"].target.encryption_type == "RANDOMIZED"
    assert plan.required_keys == ("cek_det", "cek_rnd")
    assert plan.kind == "query" and plan.catalog_version == 42
    assert plan.enclave_operations == ()


def test_targets_survive_ctes_subqueries_and_aliases() -> None:
    plan = plan_of(
        "WITH a AS (SELECT ssn AS s1 FROM patients), b AS (SELECT s1 AS s2 FROM a) "
        "SELECT x.s2 AS final FROM (SELECT s2 FROM b) AS x WHERE x.s2 = ?"
    )
    (column,) = plan.result_columns
    assert column.name == "final"
    assert column.target is not None and column.target.label == "patients.ssn"
    (parameter,) = plan.parameters
    assert parameter.source == ("user", 0)
    assert parameter.target == column.target


def test_plan_is_immutable_and_hashable_for_caching() -> None:
    plan = plan_of("SELECT ssn FROM patients WHERE ssn IN ('a', 'b')")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.sql = "DROP TABLE patients"  # type: ignore[misc]
    assert hash(plan) == hash(plan_of("SELECT ssn FROM patients WHERE ssn IN ('a', 'b')"))


# One WHERE term: (SQL template, expected ParameterSpec or None when it adds no ?).
TERMS = {
    "plain_param": ("name = ?", ("user", None)),
    "plain_literal": ("id = 3", None),
    "det_literal": ("ssn = 'v{n}'", ("literal", "patients.ssn")),
    "det_param": ("ssn = ?", ("user", "patients.ssn")),
    "other_in": ("city IN ('w{n}')", ("literal", "patients.city")),
    "reversed_literal": ("'u{n}' = zip", ("literal", "patients.zip")),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(TERMS)), min_size=1, max_size=8))
def test_parameters_follow_placeholder_order(terms: list[str]) -> None:
    where = " AND ".join(TERMS[t][0].format(n=i) for i, t in enumerate(terms))
    plan = plan_of(f"SELECT id FROM patients WHERE {where}")
    expected = []
    user = 0
    for i, term in enumerate(terms):
        spec = TERMS[term][1]
        if spec is None:
            continue
        kind, target = spec
        if kind == "user":
            expected.append((("user", user), target))
            user += 1
        else:
            value = {"det_literal": f"v{i}", "other_in": f"w{i}", "reversed_literal": f"u{i}"}
            expected.append((("literal", value[term]), target))
    got = [(p.source, p.target.label if p.target else None) for p in plan.parameters]
    assert got == expected
    assert plan.sql is not None and plan.sql.count("?") == len(expected)
    assert plan.user_parameter_count == user


def test_parameter_count_helper() -> None:
    plan = plan_of("SELECT id FROM patients WHERE ssn = 'a' AND id = ? AND name = ?")
    assert plan.user_parameter_count == 2
    assert len(plan.parameters) == 3
    check_parameter_count(plan, [1, "x"])
    for wrong in ([], [1], [1, 2, 3]):
        with pytest.raises(ProgrammingError, match="2 parameter marker"):
            check_parameter_count(plan, wrong)


def test_numbered_parameters_are_refused_on_encrypted_tables() -> None:
    with pytest.raises(ProgrammingError, match=r"use \? markers"):
        plan_of("SELECT id FROM patients WHERE ssn = $1")


def test_unknown_names_are_programming_errors() -> None:
    with pytest.raises(ProgrammingError, match="nope"):
        plan_of("SELECT nope FROM patients")


# ---- plaintext pass-through ------------------------------------------------------------------

PLAIN = [
    "SELECT a, b FROM plain WHERE a >= 1 ORDER BY b DESC",
    "SELECT b, COUNT(*) AS n, SUM(a) FROM plain GROUP BY b HAVING COUNT(*) > 0 ORDER BY b",
    "WITH q AS (SELECT a * 2 AS d FROM plain) SELECT d, d || 'x' FROM q ORDER BY d",
    "SELECT a, ROW_NUMBER() OVER (ORDER BY a DESC) FROM plain ORDER BY a",
    "SELECT upper(b), CAST(a AS VARCHAR), COALESCE(NULL, a) FROM plain ORDER BY 1",
    "SELECT * FROM range(3) AS r(i) ORDER BY i",
    "SELECT a FROM plain WHERE b LIKE 'f%' UNION SELECT 7 ORDER BY 1",
    "SELECT 0x1F",
    "SELECT 'it''s', 1.50, DATE '2024-01-31', [1, 2][1], {'k': 1}.k",
]


def _plain_db() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    connection.execute("CREATE TABLE plain (a INTEGER, b VARCHAR)")
    connection.execute("INSERT INTO plain VALUES (1, 'flu'), (2, 'cold'), (3, NULL)")
    return connection


@pytest.mark.parametrize("sql", PLAIN)
def test_plaintext_statements_give_the_same_answer_in_duckdb(sql: str) -> None:
    plan = plan_of(sql)
    assert plan.kind == "query" and plan.parameters == () and plan.result_columns == ()
    assert plan.sql is not None
    assert _plain_db().execute(plan.sql).fetchall() == _plain_db().execute(sql).fetchall()


def test_plaintext_dml_and_user_parameters_pass_through() -> None:
    plan = plan_of("INSERT INTO plain VALUES (?, ?)")
    assert plan.kind == "dml"
    assert [p.source for p in plan.parameters] == [("user", 0), ("user", 1)]
    assert all(p.target is None for p in plan.parameters)
    connection = _plain_db()
    assert plan.sql is not None
    connection.execute(plan.sql, [9, "z"])
    assert connection.execute("SELECT b FROM plain WHERE a = 9").fetchall() == [("z",)]


def test_session_statements_pass_through_as_other() -> None:
    plans = describe_sql(
        "BEGIN; SET threads = 1; PRAGMA version; COMMIT; ROLLBACK", CATALOG, enclave_available=False
    )
    assert [p.kind for p in plans] == ["other"] * 5
    connection = duckdb.connect(":memory:")
    for plan in plans[:4]:
        assert plan.sql is not None
        connection.execute(plan.sql)


# ---- table DDL -----------------------------------------------------------------------------

ENC = "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {k}, ENCRYPTION_TYPE = {t}, ALGORITHM = '{a}')"
ALGO = "AEAD_AES_256_CBC_HMAC_SHA_256"


def enc(key: str = "cek_det", kind: str = "DETERMINISTIC") -> str:
    return ENC.format(k=key, t=kind, a=ALGO)


def test_create_table_registers_encrypted_columns() -> None:
    plan = plan_of(
        f"CREATE TABLE t (id INT, ssn CHAR(11) NOT NULL {enc()}, "
        f"pay INT {enc('cek_enclave', 'RANDOMIZED')})"
    )
    assert plan.kind == "ddl"
    assert plan.sql == (
        'CREATE TABLE t (id INT, ssn BLOB NOT NULL, pay BLOB, "__ae_tag_ssn" BIGINT NOT NULL)'
    )
    registered = [c for c in plan.catalog_changes if isinstance(c, RegisterEncryptedColumn)]
    assert [
        (c.table, c.column, c.cek_name, c.encryption_type, c.algorithm) for c in registered
    ] == [
        ("t", "ssn", "cek_det", "DETERMINISTIC", ALGO),
        ("t", "pay", "cek_enclave", "RANDOMIZED", ALGO),
    ]
    # The declared type is kept (canonical spelling from engine.types, not DuckDB's TEXT).
    assert "11" in registered[0].declared_type and "CHAR" in registered[0].declared_type
    assert registered[1].declared_type in ("INT", "INTEGER")


@pytest.mark.parametrize(
    ("sql", "error", "words"),
    [
        (f"CREATE TABLE t (c INT {enc('nokey')})", ProgrammingError, "nokey"),
        (f"CREATE TABLE t (c INT {enc('cek_dt')})", ProgrammingError, "cek_det"),  # suggestion
        (f"CREATE TABLE t (c XML {enc()})", NotSupportedError, "t.c"),
        (
            f"CREATE TABLE t (c INT PRIMARY KEY {enc('cek_rnd', 'RANDOMIZED')})",
            ProgrammingError,
            "DETERMINISTIC",
        ),
        (
            f"CREATE TABLE t (c INT {enc('cek_rnd', 'RANDOMIZED')}, UNIQUE (c))",
            ProgrammingError,
            "t.c is RANDOMIZED",
        ),
        (f"CREATE TABLE t (c INT DEFAULT 5 {enc()})", NotSupportedError, "DEFAULT"),
        (f"CREATE TABLE t (c INT CHECK (c > 0) {enc()})", NotSupportedError, "CHECK"),
        (f"CREATE TABLE t (c INT {enc()}, CHECK (c > 0))", NotSupportedError, "t.c"),
        (f"ALTER TABLE plain ALTER COLUMN a INT {enc()}", NotSupportedError, "not available yet"),
        ("ALTER TABLE patients ALTER COLUMN ssn CHAR(11)", NotSupportedError, "ssn"),
        ("ALTER TABLE patients RENAME COLUMN ssn TO s", NotSupportedError, "patients"),
    ],
)
def test_table_ddl_refusals(sql: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        plan_of(sql)


def test_primary_key_on_deterministic_column_is_kept() -> None:
    plan = plan_of(f"CREATE TABLE t (c CHAR(3) PRIMARY KEY {enc()})")
    assert plan.sql == 'CREATE TABLE t (c BLOB PRIMARY KEY, "__ae_tag_c" BIGINT NOT NULL)'


def test_drop_and_alter_table_forget_encrypted_columns() -> None:
    assert plan_of("DROP TABLE patients").catalog_changes == (DropEncryptedColumns("patients"),)
    assert plan_of("DROP TABLE plain").catalog_changes == ()
    assert plan_of("ALTER TABLE patients DROP COLUMN ssn").catalog_changes == (
        DropEncryptedColumns("patients", ("ssn",)),
    )
    assert plan_of("ALTER TABLE patients DROP COLUMN name").catalog_changes == ()
    plan = plan_of("ALTER TABLE plain ALTER COLUMN a BIGINT")  # T-SQL form, plaintext column
    assert plan.sql is not None and "BIGINT" in plan.sql
    connection = _plain_db()
    connection.execute(plan.sql)
    assert connection.execute("SELECT typeof(a) FROM plain LIMIT 1").fetchone() == ("BIGINT",)


def test_create_table_if_not_exists_on_existing_table_registers_nothing() -> None:
    plan = plan_of(f"CREATE TABLE IF NOT EXISTS patients (c INT {enc()})")
    assert plan.catalog_changes == ()


# ---- key DDL -------------------------------------------------------------------------------


def test_key_ddl_plans_carry_changes_and_no_sql() -> None:
    plan = plan_of(
        "CREATE COLUMN MASTER KEY cmk3 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = '/k3.pem', ENCLAVE_COMPUTATIONS (SIGNATURE = 0x0102))"
    )
    assert plan.kind == "key_ddl" and plan.sql is None
    assert plan.catalog_changes == (CreateCmk("cmk3", "PEM_FILE", "/k3.pem", True, b"\x01\x02"),)
    plan = plan_of(
        "CREATE COLUMN ENCRYPTION KEY cek9 WITH VALUES (COLUMN_MASTER_KEY = cmk_plain, "
        "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0xAA), (COLUMN_MASTER_KEY = cmk_enclave, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    assert plan.catalog_changes == (
        CreateCek(
            "cek9",
            (
                ColumnEncryptionKeyValue("cmk_plain", "RSA_OAEP", b"\xaa"),
                ColumnEncryptionKeyValue("cmk_enclave", "RSA_OAEP", None),
            ),
        ),
    )
    plan = plan_of(
        "ALTER COLUMN ENCRYPTION KEY cek_det ADD VALUE (COLUMN_MASTER_KEY = cmk_enclave, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    assert plan.catalog_changes == (
        AddCekValue("cek_det", ColumnEncryptionKeyValue("cmk_enclave", "RSA_OAEP", None)),
    )
    assert plan_of("DROP COLUMN ENCRYPTION KEY cek_unused").catalog_changes == (
        DropCek("cek_unused"),
    )


def test_key_rotation_drop_value_and_drop_cmk() -> None:
    rotating = CatalogSnapshot(
        1,
        cmks=(
            ColumnMasterKey("old", "PEM_FILE", "/old.pem"),
            ColumnMasterKey("new", "PEM_FILE", "/new.pem"),
        ),
        ceks=(
            ColumnEncryptionKey(
                "k",
                (
                    ColumnEncryptionKeyValue("old", "RSA_OAEP", b"\x01"),
                    ColumnEncryptionKeyValue("new", "RSA_OAEP", b"\x02"),
                ),
            ),
        ),
    )
    sql = "ALTER COLUMN ENCRYPTION KEY k DROP VALUE (COLUMN_MASTER_KEY = OLD)"
    assert plan_of(sql, catalog=rotating).catalog_changes == (DropCekValue("k", "old"),)
    with pytest.raises(ProgrammingError, match="still used by column encryption key"):
        plan_of("DROP COLUMN MASTER KEY old", catalog=rotating)
    unused = dataclasses.replace(rotating, ceks=())
    assert plan_of("DROP COLUMN MASTER KEY old", catalog=unused).catalog_changes == (
        DropCmk("old"),
    )


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("DROP COLUMN MASTER KEY cmk_plain", "cek_det"),
        ("DROP COLUMN ENCRYPTION KEY cek_det", "patients.ssn"),
        ("DROP COLUMN ENCRYPTION KEY nope", "unknown column encryption key nope"),
        ("DROP COLUMN MASTER KEY nope", "unknown column master key nope"),
        (
            "CREATE COLUMN MASTER KEY cmk_plain WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = '/x')",
            "already exists",
        ),
        (
            "CREATE COLUMN ENCRYPTION KEY cek_det WITH VALUES (COLUMN_MASTER_KEY = cmk_plain, "
            "ALGORITHM = 'RSA_OAEP')",
            "already exists",
        ),
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (COLUMN_MASTER_KEY = cmk_nope, "
            "ALGORITHM = 'RSA_OAEP')",
            "cmk_nope",
        ),
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (COLUMN_MASTER_KEY = cmk_plain, "
            "ALGORITHM = 'RSA_OAEP'), (COLUMN_MASTER_KEY = CMK_PLAIN, ALGORITHM = 'RSA_OAEP')",
            "same column master key twice",
        ),
        (
            "ALTER COLUMN ENCRYPTION KEY cek_det ADD VALUE (COLUMN_MASTER_KEY = cmk_plain, "
            "ALGORITHM = 'RSA_OAEP')",
            "already has a value",
        ),
        (
            "ALTER COLUMN ENCRYPTION KEY cek_det DROP VALUE (COLUMN_MASTER_KEY = cmk_enclave)",
            "no value under",
        ),
        (
            "ALTER COLUMN ENCRYPTION KEY cek_det DROP VALUE (COLUMN_MASTER_KEY = cmk_plain)",
            "only this value",
        ),
    ],
)
def test_key_ddl_errors(sql: str, words: str) -> None:
    with pytest.raises(ProgrammingError, match=words):
        plan_of(sql)


# ---- catalog model -------------------------------------------------------------------------


def test_catalog_lookups_and_suggestions() -> None:
    assert CATALOG.table("PATIENTS").name == "patients"
    assert CATALOG.column("patients", "SSN").encryption == Encryption("cek_det", "DETERMINISTIC")
    with pytest.raises(ProgrammingError, match="did you mean patients"):
        CATALOG.table("patient")
    with pytest.raises(ProgrammingError, match="patients.*did you mean salary"):
        CATALOG.column("patients", "salery")
    with pytest.raises(ProgrammingError, match="unknown column master key"):
        CATALOG.cmk("zzz")
    assert CATALOG.enclave_enabled("cek_enclave") is True
    assert CATALOG.enclave_enabled("cek_det") is False
    assert CATALOG.table("plain").encrypted is False
    assert CATALOG.table("visits").encrypted is True


def test_enclave_enabled_needs_every_wrapping_cmk_enabled() -> None:
    mixed = CatalogSnapshot(
        1,
        cmks=(
            ColumnMasterKey("a", "PEM_FILE", "/a", allow_enclave_computations=True),
            ColumnMasterKey("b", "PEM_FILE", "/b", allow_enclave_computations=False),
        ),
        ceks=(
            ColumnEncryptionKey(
                "k",
                (
                    ColumnEncryptionKeyValue("a", "RSA_OAEP", None),
                    ColumnEncryptionKeyValue("b", "RSA_OAEP", None),
                ),
            ),
        ),
        tables=(TableInfo("t", (ColumnInfo("c", "INT", Encryption("k", "RANDOMIZED")),)),),
    )
    assert mixed.enclave_enabled("k") is False
    with pytest.raises(ProgrammingError, match="ENCLAVE_COMPUTATIONS"):
        plan_of("SELECT c FROM t ORDER BY c", catalog=mixed, enclave=True)


def test_plaintext_statements_reach_duckdb_exactly_as_written() -> None:
    text = "select  a -- note\n FROM plain;\n\nBEGIN; insert into plain values (?, 'x;y') ;"
    plans = describe_sql(text, CATALOG, enclave_available=False)
    assert [p.sql for p in plans] == [
        "select  a -- note\n FROM plain",
        "BEGIN",
        "insert into plain values (?, 'x;y')",
    ]
    assert plans[2].user_parameter_count == 1


# ---- differential: random predicates, plaintext DuckDB as the oracle ------------------------

SSNS = ["111-11-1111", "222-22-2222", "999-99-9999"]
PREDICATES = st.one_of(
    st.sampled_from(SSNS).map(lambda v: f"ssn = '{v}'"),
    st.sampled_from(SSNS).map(lambda v: f"ssn <> '{v}'"),
    st.lists(st.sampled_from(SSNS), min_size=1, max_size=3).map(
        lambda vs: "ssn IN (" + ", ".join(f"'{v}'" for v in vs) + ")"
    ),
    st.sampled_from(["paris", "lyon", "rome"]).map(lambda v: f"city = '{v}'"),
    st.sampled_from([75001, 69001, -1]).map(lambda v: f"zip = {v}"),
    st.sampled_from(["ssn IS NULL", "salary IS NOT NULL", "id > 1", "name <> 'bob'"]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(PREDICATES, min_size=1, max_size=4),
    st.sampled_from([" AND ", " OR "]),
    st.booleans(),
)
def test_rewritten_queries_give_the_plaintext_answer(
    predicates: list[str], joiner: str, grouped: bool
) -> None:
    where = joiner.join(f"({p})" for p in predicates)
    if grouped:
        sql = (
            "SELECT ssn, COUNT(*) AS n, COUNT(DISTINCT city) AS c FROM patients "
            f"WHERE {where} GROUP BY ssn"
        )
    else:
        sql = f"SELECT id, ssn, salary FROM patients WHERE {where}"
    plan = plan_of(sql)
    assert plan.sql is not None
    values = [spec.source[1] for spec in plan.parameters]
    connection = plaintext_db()
    expected = sorted(connection.execute(sql).fetchall(), key=repr)
    assert sorted(connection.execute(plan.sql, values).fetchall(), key=repr) == expected


def test_create_or_replace_forgets_the_old_registrations_first() -> None:
    plan = plan_of(f"CREATE OR REPLACE TABLE patients (id INT, ssn CHAR(11) {enc()})")
    assert plan.catalog_changes[0] == DropEncryptedColumns("patients")
    assert isinstance(plan.catalog_changes[1], RegisterEncryptedColumn)
    plain = plan_of("CREATE OR REPLACE TABLE patients (id INT)")
    assert plain.catalog_changes == (DropEncryptedColumns("patients"),)


def test_bare_constraint_nodes_beside_an_encrypted_column_do_not_crash() -> None:
    # Found by the sql fuzz target: sqlglot leaves some constraints (IN/OUT) unwrapped in the
    # column's constraint list; describe must treat them like any other constraint.
    sql = (
        "CREATE TABLE t (a IN, s CHAR(11) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_det, "
        "ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
    )
    plan = describe(parse_statements(sql)[0], CATALOG, enclave_available=False)
    assert plan.sql == 'CREATE TABLE t (a IN, s BLOB, "__ae_tag_s" BIGINT NOT NULL)'
    assert [change.column for change in plan.catalog_changes] == ["s"]

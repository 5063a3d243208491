"""The host on its own: catalog tables, catalog versions, the describe cache, key DDL checks,
atomic DDL, executemany and append paths, and DuckDB error mapping with redaction. No keys are
needed: the host only ever sees envelopes and ciphertext, so dummy bytes stand in for them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from engine import errors
from engine.host.catalog_store import CatalogStore
from engine.host.duckdb_errors import map_duckdb_error, redact_quoted
from engine.host.host import Host
from engine.host.rewrite_values_insert import rewrite_values_insert
from engine.sql.catalog import ColumnEncryptionKeyValue
from engine.sql.plan import CreateCek, CreateCmk, DropCek, DropCmk, Plan
from engine.sql.tag_columns import cell_tag

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ENVELOPE = b"\x01envelope-bytes"


def _keys(host: Host) -> None:
    cmk = host.describe(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem')"
    )
    host.apply_key_ddl(cmk, cmk.catalog_changes)
    cek = host.describe(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0x01AB)"
    )
    host.apply_key_ddl(cek, cek.catalog_changes)


@pytest.fixture()
def host() -> Host:
    instance = Host(":memory:")
    _keys(instance)
    instance.execute(
        instance.describe(
            f"CREATE TABLE p (id INT PRIMARY KEY, ssn VARCHAR {ENC.format('DETERMINISTIC')} "
            f"UNIQUE, salary INT {ENC.format('RANDOMIZED')})"
        )
    )
    yield instance
    instance.close()


def test_catalog_tables_are_plain_tables(host: Host) -> None:
    rows = host.execute(host.describe("SELECT name, key_path FROM sys.column_master_keys"))
    assert rows.table.to_pylist() == [{"name": "cmk1", "key_path": "cmk.pem"}]
    columns = host.execute(
        host.describe(
            "SELECT column_name, declared_type, encryption_type, encryption_type_desc "
            "FROM sys.encrypted_columns ORDER BY column_name"
        )
    ).table.to_pylist()
    assert columns == [
        {"column_name": "salary", "declared_type": "INTEGER", "encryption_type": 2,
         "encryption_type_desc": "RANDOMIZED"},
        {"column_name": "ssn", "declared_type": "VARCHAR", "encryption_type": 1,
         "encryption_type_desc": "DETERMINISTIC"},
    ]  # fmt: skip
    values = host.execute(
        host.describe("SELECT encrypted_value FROM sys.column_encryption_key_values")
    )
    assert values.table.column(0).to_pylist() == [b"\x01\xab"]


def test_snapshot_lists_encrypted_and_plaintext_tables(host: Host) -> None:
    host.execute(host.describe("CREATE TABLE plain (a DECIMAL(5,2))"))
    snapshot = host.catalog_snapshot()
    assert snapshot.table("p").column("ssn").encryption.encryption_type == "DETERMINISTIC"
    assert snapshot.table("p").column("ssn").declared_type == "VARCHAR"
    assert snapshot.table("plain").column("a").encryption is None
    assert snapshot.cek("cek1").values[0].encrypted_value == b"\x01\xab"


def test_catalog_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "h.duckdb")
    first = Host(path)
    _keys(first)
    version = first.catalog_version()
    first.close()
    second = Host(path)
    assert second.catalog_version() == version
    assert second.catalog_snapshot().has_cek("cek1")
    second.close()


def test_every_ddl_bumps_the_version_and_versions_are_never_reused(host: Host) -> None:
    start = host.catalog_version()
    host.execute(host.describe("CREATE TABLE a (x INT)"))
    after_create = host.catalog_version()
    assert after_create > start
    host.execute(host.describe("BEGIN"))
    host.execute(host.describe("CREATE TABLE b (x INT)"))
    inside = host.catalog_version()
    host.rollback()
    assert host.catalog_version() == after_create
    host.execute(host.describe("CREATE TABLE c (x INT)"))
    assert host.catalog_version() > inside


def test_describe_cache_hits_and_is_invalidated_by_catalog_changes(host: Host) -> None:
    sql = "SELECT id FROM p WHERE ssn = ?"
    first = host.describe(sql)
    misses = host.describe_cache.misses
    assert host.describe(sql) is first
    assert host.describe_cache.hits >= 1 and host.describe_cache.misses == misses
    host.execute(host.describe("CREATE TABLE other (x INT)"))
    again = host.describe(sql)
    assert host.describe_cache.misses == misses + 2  # the CREATE and the new version
    assert again.catalog_version > first.catalog_version


def test_failures_are_not_cached(host: Host) -> None:
    misses, cached = host.describe_cache.misses, len(host.describe_cache)
    for _ in range(2):
        with pytest.raises(errors.ProgrammingError, match="unknown column encryption key"):
            host.describe("DROP COLUMN ENCRYPTION KEY cek2")
    assert host.describe_cache.misses == misses + 2
    assert len(host.describe_cache) == cached


def test_host_refuses_to_drop_keys_in_use_even_without_the_sql_layer(host: Host) -> None:
    plan = Plan("key_ddl", None, catalog_version=host.catalog_version(),
                catalog_changes=(DropCek("cek1"),))  # fmt: skip
    with pytest.raises(errors.ProgrammingError, match="still used by column"):
        host.apply_key_ddl(plan, plan.catalog_changes)
    plan = Plan("key_ddl", None, catalog_version=host.catalog_version(),
                catalog_changes=(DropCmk("cmk1"),))  # fmt: skip
    with pytest.raises(errors.ProgrammingError, match="still used by column encryption key"):
        host.apply_key_ddl(plan, plan.catalog_changes)
    assert host.catalog_snapshot().has_cek("cek1")


def test_host_refuses_a_cek_without_envelope(host: Host) -> None:
    plan = host.describe(
        "CREATE COLUMN ENCRYPTION KEY cek2 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    with pytest.raises(errors.ProgrammingError, match="no ENCRYPTED_VALUE"):
        host.apply_key_ddl(plan, plan.catalog_changes)
    assert not host.catalog_snapshot().has_cek("cek2")
    completed = (CreateCek("cek2", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", ENVELOPE),)),)
    host.apply_key_ddl(plan, completed)
    assert host.catalog_snapshot().cek("cek2").values[0].encrypted_value == ENVELOPE


def test_apply_key_ddl_checks_plan_shape_and_version(host: Host) -> None:
    plan = host.describe(
        "CREATE COLUMN MASTER KEY cmk2 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'k2.pem')"
    )
    with pytest.raises(errors.ProgrammingError, match="does not match"):
        host.apply_key_ddl(plan, ())
    host.execute(host.describe("CREATE TABLE bump (x INT)"))
    with pytest.raises(errors.OperationalError, match="describe it again"):
        host.apply_key_ddl(plan, (CreateCmk("cmk2", "PEM_FILE", "k2.pem", False, None),))
    with pytest.raises(errors.ProgrammingError, match="apply_key_ddl"):
        host.execute(plan)


def test_failed_table_ddl_leaves_the_catalog_unchanged(host: Host) -> None:
    version = host.catalog_version()
    with pytest.raises(errors.ProgrammingError):
        host.execute(host.describe(f"CREATE TABLE p (x INT {ENC.format('DETERMINISTIC')})"))
    assert host.catalog_version() == version
    ssn_rows = host.execute(
        host.describe("SELECT count(*) FROM sys.encrypted_columns WHERE table_name = 'p'")
    )
    assert ssn_rows.table.column(0).to_pylist() == [2]


def test_drop_table_forgets_its_encrypted_columns(host: Host) -> None:
    host.execute(host.describe("DROP TABLE p"))
    count = host.execute(host.describe("SELECT count(*) FROM sys.encrypted_columns"))
    assert count.table.column(0).to_pylist() == [0]
    dropped = host.describe("DROP COLUMN ENCRYPTION KEY cek1")
    host.apply_key_ddl(dropped, dropped.catalog_changes)
    assert not host.catalog_snapshot().has_cek("cek1")


def test_execute_checks_parameter_count(host: Host) -> None:
    plan = host.describe("SELECT id FROM p WHERE ssn = ?")
    with pytest.raises(errors.ProgrammingError, match="1 parameter marker"):
        host.execute(plan, [])


def test_errors_on_encrypted_statements_mask_values(host: Host) -> None:
    cell = b"\x01" + bytes(range(40, 100))
    insert = host.describe("INSERT INTO p (id, ssn) VALUES (?, ?)")
    host.execute(insert, [1, cell, cell_tag(cell)])
    with pytest.raises(errors.IntegrityError) as raised:
        host.execute(insert, [2, cell, cell_tag(cell)])
    assert "<value>" in str(raised.value)
    assert "89:;" not in str(raised.value) and "\\x01" not in str(raised.value)
    with pytest.raises(errors.IntegrityError) as raised:
        host.append_arrow("p", pa.table({"id": [3], "ssn": [cell]}))
    assert "89:;" not in str(raised.value)


def test_execute_many_vectorized_and_row_paths_are_atomic(host: Host) -> None:
    insert = host.describe("INSERT INTO p (id, ssn) VALUES (?, ?)")
    # p2: the tag of p1's cell (engine.sql.tag_columns).
    batch = pa.table({"p0": [1, 2], "p1": [b"\x01a", b"\x01b"], "p2": [0, 0]})
    assert host.execute_many(insert, batch) == 2
    with pytest.raises(errors.IntegrityError):
        host.execute_many(
            insert, pa.table({"p0": [5, 1], "p1": [b"\x01c", b"\x01d"], "p2": [0, 0]})
        )
    with pytest.raises(errors.IntegrityError):
        host.execute_many(insert, [[6, b"\x01e", 0], [2, b"\x01f", 0]])
    count = host.execute(host.describe("SELECT count(*) FROM p")).table.column(0).to_pylist()
    assert count == [2]
    update = host.describe("UPDATE p SET salary = ? WHERE id = ?")
    assert host.execute_many(update, [[b"\x01s", 1], [b"\x01t", 2], [b"\x01u", 9]]) == 2
    with pytest.raises(errors.ProgrammingError, match="parameter marker"):
        host.execute_many(update, [[1]])


def test_append_arrow(host: Host) -> None:
    assert host.append_arrow("P", pa.table({"ID": [1], "ssn": [b"\x01x"]})) == 1
    with pytest.raises(errors.ProgrammingError, match="unknown column"):
        host.append_arrow("p", pa.table({"nope": [1]}))
    with pytest.raises(errors.ProgrammingError, match="unknown table"):
        host.append_arrow("nope", pa.table({"id": [1]}))


def test_closed_host_raises_interface_error() -> None:
    instance = Host(":memory:")
    instance.close()
    instance.close()
    with pytest.raises(errors.InterfaceError):
        instance.describe("SELECT 1")


def test_duckdb_error_mapping() -> None:
    cases = [
        (duckdb.ConstraintException("x"), errors.IntegrityError),
        (duckdb.ConversionException("x"), errors.DataError),
        (duckdb.CatalogException("x"), errors.ProgrammingError),
        (duckdb.ParserException("x"), errors.ProgrammingError),
        (duckdb.NotImplementedException("x"), errors.NotSupportedError),
        (duckdb.InternalException("x"), errors.InternalError),
        (duckdb.IOException("x"), errors.OperationalError),
    ]
    for error, expected in cases:
        assert type(map_duckdb_error(error, redact=False)) is expected
    assert redact_quoted("a 'b' \"c\" 'it''s'") == "a '<value>' \"<value>\" '<value>'"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t VALUES (?, ?)", "INSERT INTO t SELECT v.p0, v.p1 FROM v"),
        (
            "INSERT INTO t (b, a) VALUES (?, 1 + ?)",
            "INSERT INTO t (b, a) SELECT v.p0, 1 + v.p1 FROM v",
        ),
        ("INSERT INTO t VALUES (?), (?)", None),
        ("INSERT INTO t SELECT ?", None),
        ("UPDATE t SET a = ?", None),
        ("INSERT INTO t VALUES (?) ON CONFLICT DO UPDATE SET a = ?", None),
    ],
)
def test_rewrite_values_insert(sql: str, expected: str | None) -> None:
    assert rewrite_values_insert(sql, "v") == expected


def test_catalog_store_create_tables_is_idempotent() -> None:
    connection = duckdb.connect()
    store = CatalogStore(connection)
    store.create_tables()
    store.write_version(5)
    store.create_tables()
    assert store.read_version() == 5


def test_read_only_needs_an_existing_catalog(tmp_path: Path) -> None:
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).close()
    with pytest.raises(errors.OperationalError, match="read-only"):
        Host(str(plain), read_only=True)
    made = tmp_path / "made.duckdb"
    Host(str(made)).close()
    reader = Host(str(made), read_only=True)
    assert reader.catalog_version() == 0
    reader.close()

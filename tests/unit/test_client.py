"""The client on its own: statement splitting and literal lifting, the check of the host's plan,
key DDL completion (generated, wrapped and signed keys), trusted key paths, and the refusal to
send a value for an encrypted column unencrypted."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path

import pytest

from engine import errors
from engine.client.client import Client
from engine.client.cmk_metadata import verify_cmk_metadata
from engine.client.column_keys import cek_key_check
from engine.client.parameters import coerce_text, encrypt_parameters
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.describe import describe_sql
from engine.sql.plan import AddCekValue, CreateCek, CreateCmk, EncryptionTarget, ParameterSpec


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("client-keys")
    client = Client(key_dir=str(directory))
    for name in ("a.pem", "b.pem"):
        client.registry.get("PEM_FILE").generate_key(name, key_size=2048)
    return directory


def _snapshot(envelope: bytes | None = b"\x01x") -> CatalogSnapshot:
    cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", envelope),))
    ssn = ColumnInfo("ssn", "VARCHAR(11)", Encryption("cek1", "DETERMINISTIC"))
    return CatalogSnapshot(
        3,
        (
            ColumnMasterKey("cmk1", "PEM_FILE", "a.pem"),
            ColumnMasterKey("cmk2", "PEM_FILE", "b.pem"),
        ),
        (cek,),
        (TableInfo("p", (ColumnInfo("id", "INTEGER"), ssn)),),
    )


def test_split_keeps_each_statement_text() -> None:
    client = Client()
    assert client.split("SELECT 1 ;\n  SELECT 'a;b'") == ("SELECT 1", "SELECT 'a;b'")
    assert client.split("SELECT 2;") == ("SELECT 2;",)
    with pytest.raises(errors.ProgrammingError, match="syntax error"):
        client.split("SELEC 1; SELECT 2")
    with pytest.raises(errors.ProgrammingError, match="syntax error"):
        client.prepare("SELEC 1", _snapshot())


def test_prepare_lifts_literals_out_of_the_host_text() -> None:
    client = Client()
    prepared = client.prepare("SELECT id FROM p WHERE ssn = '123-45-6789'", _snapshot())
    assert "123-45-6789" not in prepared.host_text
    assert prepared.plan.parameters[0].source == ("literal", "123-45-6789")
    # A plan with lifted plaintext literals is not kept in the cache.
    again = client.prepare("SELECT id FROM p WHERE ssn = '123-45-6789'", _snapshot())
    assert again is not prepared and again == prepared
    plain = client.prepare("SELECT id FROM p WHERE id = 5", _snapshot())
    assert plain.host_text == "SELECT id FROM p WHERE id = 5"
    assert client.prepare("SELECT id FROM p WHERE id = 5", _snapshot()) is plain


def test_host_plan_that_drops_a_target_is_refused() -> None:
    client = Client()
    prepared = client.prepare("SELECT id FROM p WHERE ssn = ?", _snapshot())
    honest = describe_sql(prepared.host_text, _snapshot(), enclave_available=False)[0]
    client.check_host_plan(prepared, honest)
    lying = replace(honest, parameters=(replace(honest.parameters[0], target=None),))
    with pytest.raises(errors.OperationalError, match="refusing to send values"):
        client.check_host_plan(prepared, lying)
    selected = client.prepare("SELECT ssn FROM p", _snapshot())
    plan = describe_sql(selected.host_text, _snapshot(), enclave_available=False)[0]
    hidden = replace(plan, result_columns=(replace(plan.result_columns[0], target=None),))
    with pytest.raises(errors.OperationalError):
        client.check_host_plan(selected, hidden)


def test_values_for_encrypted_columns_need_column_encryption() -> None:
    target = EncryptionTarget("p", "ssn", "cek1", "DETERMINISTIC", "VARCHAR(11)")
    specs = [ParameterSpec(("user", 0), None), ParameterSpec(("literal", "secret"), target)]
    with pytest.raises(errors.ProgrammingError, match="column_encryption=True") as raised:
        encrypt_parameters(specs, [1], None)
    assert "secret" not in str(raised.value)
    assert encrypt_parameters(specs[:1], [1], None) == [1]


def test_complete_key_ddl_generates_wraps_and_signs(key_dir: Path) -> None:
    client = Client(key_dir=str(key_dir))
    snapshot = _snapshot(envelope=None)
    prepared = client.prepare(
        "CREATE COLUMN ENCRYPTION KEY cek9 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP'), (COLUMN_MASTER_KEY = cmk2, ALGORITHM = 'RSA_OAEP')",
        snapshot,
    )
    (change,) = client.complete_key_ddl(prepared, snapshot)
    assert isinstance(change, CreateCek)
    first, second = (value.encrypted_value for value in change.values)
    assert first and second and first != second
    pem = client.registry.get("PEM_FILE")
    key = pem.unwrap_cek("a.pem", first)
    assert len(key) == 32 and pem.unwrap_cek("b.pem", second) == key
    # Both values carry the key check that binds the key to its name.
    checks = {value.key_check for value in change.values}
    assert checks == {cek_key_check(key, "cek9")} and cek_key_check(key, "cek1") not in checks

    # ADD VALUE without ENCRYPTED_VALUE wraps the same key under the new CMK.
    stored = ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", first, cek_key_check(key, "cek1"))
    with_cek = replace(snapshot, ceks=(ColumnEncryptionKey("cek1", (stored,)),))
    added = client.prepare(
        "ALTER COLUMN ENCRYPTION KEY cek1 ADD VALUE (COLUMN_MASTER_KEY = cmk2, "
        "ALGORITHM = 'RSA_OAEP')",
        with_cek,
    )
    (change,) = client.complete_key_ddl(added, with_cek)
    assert isinstance(change, AddCekValue)
    assert pem.unwrap_cek("b.pem", change.value.encrypted_value) == key
    assert change.value.key_check == stored.key_check

    cmk = client.prepare(
        "CREATE COLUMN MASTER KEY cmk3 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'b.pem', ENCLAVE_COMPUTATIONS)",
        snapshot,
    )
    (change,) = client.complete_key_ddl(cmk, snapshot)
    assert isinstance(change, CreateCmk) and change.signature
    verify_cmk_metadata(pem, "PEM_FILE", "b.pem", True, change.signature)
    client.close()


def test_key_ddl_respects_trusted_key_paths(key_dir: Path) -> None:
    client = Client(key_dir=str(key_dir), trusted_key_paths={"b.pem"})
    snapshot = _snapshot(envelope=None)
    prepared = client.prepare(
        "CREATE COLUMN ENCRYPTION KEY cek9 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')",
        snapshot,
    )
    with pytest.raises(errors.OperationalError, match="trusted_key_paths"):
        client.complete_key_ddl(prepared, snapshot)


def test_coerce_text_reads_text_as_duckdb_does() -> None:
    assert coerce_text(["10:11:12.5"], "TIME") == [datetime.time(10, 11, 12, 500000)]
    assert coerce_text(["2024-01-31 10:00:00"], "TIMESTAMPTZ") == [
        datetime.datetime(2024, 1, 31, 10, tzinfo=datetime.UTC)
    ]
    assert coerce_text(["a\\x41\\xzz"], "BLOB") == [b"aA\\xzz"]
    assert coerce_text(["x", 1], "INTEGER") == ["x", 1]

"""describe_alter_column_encryption: which ALTER COLUMN statements are in-place encryption
changes, what they resolve to, and the refusals (pure; no DuckDB, no keys)."""

from __future__ import annotations

import pytest

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.alter_column_encryption import describe_alter_column_encryption_sql
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.plan import DropEncryptedColumns, RegisterEncryptedColumn

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


@pytest.fixture()
def snapshot() -> CatalogSnapshot:
    value = ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", b"\x01")
    ceks = (ColumnEncryptionKey("cek1", (value,)), ColumnEncryptionKey("Cek2", (value,)))
    columns = (
        ColumnInfo("id", "INTEGER"),
        ColumnInfo("name", "VARCHAR"),
        ColumnInfo("ssn", "CHAR(11)", Encryption("cek1", "DETERMINISTIC")),
    )
    return CatalogSnapshot(
        9, (ColumnMasterKey("cmk1", "PEM_FILE", "k.pem"),), ceks, (TableInfo("P", columns),)
    )


def test_plaintext_to_encrypted(snapshot: CatalogSnapshot) -> None:
    sql = f"ALTER TABLE p ALTER COLUMN NAME NVARCHAR(40) {ENC.format('cek2', 'RANDOMIZED')}"
    change = describe_alter_column_encryption_sql(sql, snapshot)
    assert change is not None
    assert (change.kind, change.table, change.column, change.label) == (
        "encrypt",
        "P",
        "name",
        "P.name",
    )
    assert change.source is None and change.source_type == "VARCHAR"
    assert change.target is not None
    assert (change.target.cek_name, change.target.encryption_type) == ("Cek2", "RANDOMIZED")
    assert (change.storage_type, change.read_type, change.target_type) == (
        "BLOB",
        "VARCHAR",
        "NVARCHAR(40)",
    )
    assert change.catalog_changes == (
        RegisterEncryptedColumn(
            "P", "name", "NVARCHAR(40)", "Cek2", "RANDOMIZED", "AEAD_AES_256_CBC_HMAC_SHA_256"
        ),
    )
    assert change.catalog_version == 9 and change.required_keys == ("Cek2",)


def test_encrypted_to_other_key_and_type(snapshot: CatalogSnapshot) -> None:
    sql = f"ALTER TABLE p ALTER COLUMN ssn CHAR(11) {ENC.format('cek2', 'RANDOMIZED')}"
    change = describe_alter_column_encryption_sql(sql, snapshot)
    assert change is not None and change.kind == "reencrypt"
    assert change.source is not None and change.source.cek_name == "cek1"
    assert change.read_type is None and change.required_keys == ("cek1", "Cek2")


def test_encrypted_to_plaintext(snapshot: CatalogSnapshot) -> None:
    change = describe_alter_column_encryption_sql(
        "ALTER TABLE p ALTER COLUMN ssn VARCHAR", snapshot
    )
    assert change is not None and change.kind == "decrypt"
    assert change.storage_type == "VARCHAR" and change.target is None
    assert change.catalog_changes == (DropEncryptedColumns("P", ("ssn",)),)


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE p ALTER COLUMN name VARCHAR(20)",  # DuckDB's own type change
        "ALTER TABLE p ADD COLUMN x INT",
        "SELECT 1",
        "SELECT 1; SELECT 2",
    ],
)
def test_other_statements_are_not_in_place_changes(snapshot: CatalogSnapshot, sql: str) -> None:
    assert describe_alter_column_encryption_sql(sql, snapshot) is None


@pytest.mark.parametrize(
    ("sql", "error", "words"),
    [
        (f"ALTER TABLE q ALTER COLUMN a INT {ENC.format('cek1', 'RANDOMIZED')}", ProgrammingError,
         "unknown table q"),
        (f"ALTER TABLE p ALTER COLUMN nope INT {ENC.format('cek1', 'RANDOMIZED')}",
         ProgrammingError, "nope"),
        (f"ALTER TABLE p ALTER COLUMN id INT {ENC.format('cek9', 'RANDOMIZED')}", ProgrammingError,
         "unknown column encryption key cek9"),
        (f"ALTER TABLE p ALTER COLUMN id INT {ENC.format('cek1', 'RANDOMIZED')}".replace(
            "AEAD_AES_256_CBC_HMAC_SHA_256", "AES_GCM"), NotSupportedError, "ALGORITHM"),
        (f"ALTER TABLE p ALTER COLUMN id JSON {ENC.format('cek1', 'RANDOMIZED')}",
         (NotSupportedError, ProgrammingError), "P.id"),
    ],
)  # fmt: skip
def test_refusals_name_what_is_wrong(
    snapshot: CatalogSnapshot, sql: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        describe_alter_column_encryption_sql(sql, snapshot)

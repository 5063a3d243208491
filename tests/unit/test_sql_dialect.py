"""The EnclaveDuckDB dialect: AE DDL parses, round-trips to text, and fails with PEP 249 errors."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

import engine.sql
from engine.errors import NotSupportedError, ProgrammingError
from engine.sql import parse_statements, to_sql
from engine.sql.ae_nodes import (
    AlterColumnEncryption,
    AlterColumnEncryptionKey,
    CreateColumnEncryptionKey,
    CreateColumnMasterKey,
    DropColumnEncryptionKey,
    DropColumnMasterKey,
    EncryptedWithColumnConstraint,
)

ALGO = "'AEAD_AES_256_CBC_HMAC_SHA_256'"
ENC_DET = (
    f"ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = DETERMINISTIC, "
    f"ALGORITHM = {ALGO})"
)

# Canonical text: parsing it and generating again must give it back unchanged.
CANONICAL = [
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = '/keys/cmk1.pem')",
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PKCS11', "
    "KEY_PATH = 'pkcs11:token=t;object=k', ENCLAVE_COMPUTATIONS)",
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'k.pem', ENCLAVE_COMPUTATIONS (SIGNATURE = 0x00FF10))",
    "DROP COLUMN MASTER KEY cmk1",
    "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0x01AB)",
    "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP'), (COLUMN_MASTER_KEY = cmk2, ALGORITHM = 'RSA_OAEP')",
    "ALTER COLUMN ENCRYPTION KEY cek1 ADD VALUE (COLUMN_MASTER_KEY = cmk2, "
    "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0xABCD)",
    "ALTER COLUMN ENCRYPTION KEY cek1 ADD VALUE (COLUMN_MASTER_KEY = cmk2, ALGORITHM = 'RSA_OAEP')",
    "ALTER COLUMN ENCRYPTION KEY cek1 DROP VALUE (COLUMN_MASTER_KEY = cmk1)",
    "DROP COLUMN ENCRYPTION KEY cek1",
    f"CREATE TABLE p (id INT PRIMARY KEY, ssn CHAR(11) {ENC_DET} NOT NULL)",
    f"CREATE TABLE p (n NVARCHAR(20) {ENC_DET.replace('DETERMINISTIC', 'RANDOMIZED')})",
    f"ALTER TABLE p ALTER COLUMN ssn CHAR(11) {ENC_DET}",
    "ALTER TABLE p ALTER COLUMN ssn CHAR(11)",
]


@pytest.mark.parametrize("sql", CANONICAL)
def test_ae_statements_round_trip(sql: str) -> None:
    (statement,) = parse_statements(sql)
    assert to_sql(statement) == sql
    assert to_sql(parse_statements(to_sql(statement))[0]) == sql


def test_keywords_are_case_insensitive_and_options_any_order() -> None:
    (lower,) = parse_statements(
        "create column master key CMK with (key_path = 'p', key_store_provider_name = 'PEM_FILE', "
        "enclave_computations (signature = 0xab))"
    )
    assert isinstance(lower, CreateColumnMasterKey)
    assert lower.args["signature"].to_bytes() == b"\xab"
    assert to_sql(lower) == (
        "CREATE COLUMN MASTER KEY CMK WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'p', ENCLAVE_COMPUTATIONS (SIGNATURE = 0xAB))"
    )
    (column,) = parse_statements(
        "create table t (c int encrypted with (algorithm = 'aead_aes_256_cbc_hmac_sha_256', "
        "encryption_type = randomized, column_encryption_key = k))"
    )
    constraint = column.find(EncryptedWithColumnConstraint)
    assert constraint is not None
    assert constraint.args["encryption_type"].name == "RANDOMIZED"
    assert constraint.args["algorithm"].name == "AEAD_AES_256_CBC_HMAC_SHA_256"


def test_node_types() -> None:
    kinds = [type(s) for s in parse_statements(";".join(CANONICAL))]
    assert kinds[:10] == [
        CreateColumnMasterKey,
        CreateColumnMasterKey,
        CreateColumnMasterKey,
        DropColumnMasterKey,
        CreateColumnEncryptionKey,
        CreateColumnEncryptionKey,
        AlterColumnEncryptionKey,
        AlterColumnEncryptionKey,
        AlterColumnEncryptionKey,
        DropColumnEncryptionKey,
    ]
    assert parse_statements(CANONICAL[-1])[0].find(AlterColumnEncryption) is not None


def test_plain_duckdb_statements_still_parse() -> None:
    sql = (
        "CREATE TABLE t (a INT); ALTER TABLE t ALTER COLUMN a TYPE BIGINT; "
        "ALTER TABLE t ALTER a SET DEFAULT 1; DROP TABLE t; SELECT 1"
    )
    assert [s.key for s in parse_statements(sql)] == ["create", "alter", "alter", "drop", "select"]


@given(
    name=st.text(string.ascii_letters, min_size=1, max_size=12).map(lambda s: "k" + s),
    path=st.text(string.ascii_letters + string.digits + "/._-:;=", max_size=40),
    signature=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
    enclave=st.booleans(),
)
def test_cmk_round_trip_property(
    name: str, path: str, signature: bytes | None, enclave: bool
) -> None:
    options = f"KEY_STORE_PROVIDER_NAME = 'PEM_FILE', KEY_PATH = '{path}'"
    if enclave:
        options += ", ENCLAVE_COMPUTATIONS"
        if signature is not None:
            options += f" (SIGNATURE = 0x{signature.hex()})"
    (statement,) = parse_statements(f"CREATE COLUMN MASTER KEY {name} WITH ({options})")
    again = parse_statements(to_sql(statement))[0]
    assert again.name == name
    assert again.args["key_path"].name == path
    assert bool(again.args.get("enclave_computations")) == enclave
    got = again.args.get("signature")
    assert (got.to_bytes() if got is not None else None) == (signature if enclave else None)


@pytest.mark.parametrize(
    ("sql", "words", "line", "column"),
    [
        ("CREATE COLUMN MASTER KEY c WITH (KEY_PATH = 'x')", "KEY_STORE_PROVIDER_NAME", 1, None),
        (
            "CREATE COLUMN MASTER KEY c WITH (\n  KEY_PATH = 'x',\n  COLOUR = 'red')",
            "unknown option COLOUR",
            3,
            3,
        ),
        (
            "CREATE COLUMN MASTER KEY c WITH (KEY_PATH = 'x', KEY_PATH = 'y', "
            "KEY_STORE_PROVIDER_NAME = 'PEM_FILE')",
            "KEY_PATH is given twice",
            1,
            None,
        ),
        ("CREATE COLUMN MASTER KEY c WITH (KEY_PATH = 42)", "KEY_PATH expects a quoted", 1, 45),
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (ALGORITHM = 'RSA_OAEP')",
            "missing COLUMN_MASTER_KEY",
            1,
            None,
        ),
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (COLUMN_MASTER_KEY = c, "
            "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0xABC)",
            "ENCRYPTED_VALUE must be 0x followed by an even number",
            1,
            None,
        ),
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (COLUMN_MASTER_KEY = c, "
            "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 'ab')",
            "ENCRYPTED_VALUE expects a binary literal",
            1,
            None,
        ),
        ("ALTER COLUMN ENCRYPTION KEY k RENAME TO j", "ADD VALUE", 1, 31),
        (
            f"CREATE TABLE t (c INT ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = k, "
            f"ENCRYPTION_TYPE = SOMETIMES, ALGORITHM = {ALGO}))",
            "ENCRYPTION_TYPE must be DETERMINISTIC or RANDOMIZED",
            1,
            None,
        ),
        (
            "CREATE TABLE t (c INT ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = k, "
            "ENCRYPTION_TYPE = RANDOMIZED))",
            "missing ALGORITHM",
            1,
            None,
        ),
    ],
)
def test_option_errors_name_the_option_with_line_and_column(
    sql: str, words: str, line: int, column: int | None
) -> None:
    with pytest.raises(ProgrammingError) as caught:
        parse_statements(sql)
    message = str(caught.value)
    assert words in message
    assert f"at line {line}, column " in message
    if column is not None:
        assert f"at line {line}, column {column}" in message


@pytest.mark.parametrize(
    ("sql", "supported"),
    [
        (
            "CREATE COLUMN ENCRYPTION KEY k WITH VALUES (COLUMN_MASTER_KEY = c, "
            "ALGORITHM = 'RSA_PKCS1')",
            "RSA_OAEP",
        ),
        (
            "CREATE TABLE t (c INT ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = k, "
            "ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AES_GCM'))",
            "AEAD_AES_256_CBC_HMAC_SHA_256",
        ),
    ],
)
def test_unknown_algorithm_is_not_supported_and_lists_the_supported_one(
    sql: str, supported: str
) -> None:
    with pytest.raises(NotSupportedError, match=supported):
        parse_statements(sql)


def test_syntax_errors_give_line_and_column_and_no_literal() -> None:
    with pytest.raises(ProgrammingError) as caught:
        parse_statements("SELECT 1;\nSELECT * FROM WHERE")
    assert str(caught.value).startswith("syntax error at line 2, column 15: ")
    with pytest.raises(ProgrammingError) as caught:
        parse_statements("SELECT * FROM t WHERE a = 'CANARY-7731' 'CANARY-7731' )")
    assert "syntax error at line 1" in str(caught.value)
    assert "CANARY" not in str(caught.value)
    with pytest.raises(ProgrammingError, match="could not be tokenized") as caught:
        parse_statements("SELECT 'CANARY-7731")
    assert "CANARY" not in str(caught.value)


def test_module_doctests() -> None:
    """The examples in the engine.sql docstrings run (pytest does not collect them itself)."""
    failures = 0
    for info in pkgutil.iter_modules(engine.sql.__path__, "engine.sql."):
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        failures += result.failed
    assert failures == 0

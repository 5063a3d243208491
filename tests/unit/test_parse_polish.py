"""Parser polish: blob literals (X'..'), EXPORT/IMPORT DATABASE and T-SQL type names in ALTER
COLUMN, checked at the parser and, for queries, against plaintext DuckDB through engine.connect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

import engine
from engine.errors import ProgrammingError
from engine.sql.ae_nodes import AlterColumnEncryption, ExportDatabase, ImportDatabase
from engine.sql.dialect import parse_statements, to_sql
from tests.support.keys import CEK1_KEYS, make_cmk

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = [(1, b"\x01", b"\x01"), (2, b"\xff\x00", b"\xff\x00"), (3, None, None)]


# ---- blob literals: the parser ----------------------------------------------------------


@pytest.mark.parametrize("text", ["X'01ff'", "x'01ff'", "X''", "x'AbC0'"])
def test_blob_literal_parses_and_round_trips(text: str) -> None:
    [statement] = parse_statements(f"SELECT {text}")
    literal = statement.selects[0]
    assert isinstance(literal, exp.HexString)
    # Written back in DuckDB's own spelling, so a rewritten query keeps type and column name.
    assert to_sql(statement) == f"SELECT X'{text[2:-1]}'"


@given(st.binary(max_size=16))
@settings(max_examples=40, deadline=None)
def test_generated_blob_literal_means_the_same_bytes_in_duckdb(value: bytes) -> None:
    [statement] = parse_statements(f"SELECT x'{value.hex()}' AS v")
    with duckdb.connect() as oracle:
        assert oracle.execute(to_sql(statement)).fetchall() == [(value,)]


def test_blob_literal_with_a_non_hex_digit_is_a_programming_error_without_the_text() -> None:
    with pytest.raises(ProgrammingError, match="hex digits") as caught:
        parse_statements("SELECT X'0g1f'")
    assert "0g1f" not in str(caught.value)


def test_blob_literal_with_an_odd_number_of_digits_is_a_programming_error() -> None:
    with pytest.raises(ProgrammingError, match="two hex digits per byte.*column 8") as caught:
        parse_statements("SELECT X'abc'")
    assert "abc" not in str(caught.value)


def test_identifiers_named_x_still_parse() -> None:
    [statement] = parse_statements("SELECT x, X AS y FROM x")
    assert [s.alias_or_name for s in statement.selects] == ["x", "y"]


# ---- blob literals: through engine.connect, against DuckDB --------------------------------


@pytest.fixture(scope="module")
def connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    key_dir = tmp_path_factory.mktemp("polish-keys")
    make_cmk(key_dir)
    con = engine.connect(":memory:", key_dir=str(key_dir))
    for statement in CEK1_KEYS:
        con.execute(statement)
    con.execute(f"CREATE TABLE b (id INT, plain BLOB, secret BLOB {ENC})")
    con.cursor().executemany("INSERT INTO b VALUES (?, ?, ?)", ROWS)
    oracle = duckdb.connect()
    oracle.execute("CREATE TABLE b (id INT, plain BLOB, secret BLOB)")
    oracle.executemany("INSERT INTO b VALUES (?, ?, ?)", ROWS)
    yield con, oracle
    con.close()
    oracle.close()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT X'01ff'",
        "SELECT x'01ff' AS v, X'' AS empty",
        "SELECT '\\x01'::BLOB",
        "SELECT id FROM b WHERE plain = X'01'",
        "SELECT id FROM b WHERE plain IN (x'ff00', X'01') ORDER BY id",
        "SELECT id, plain = X'ff00' FROM b ORDER BY id",
        # The same literals aimed at an encrypted BLOB column: lifted out and encrypted.
        "SELECT id FROM b WHERE secret = X'01'",
        "SELECT id, secret FROM b WHERE secret = x'FF00'",
        "SELECT id, X'0a' AS tag FROM b WHERE secret IN (X'01', X'ff00') ORDER BY id",
    ],
)
def test_blob_literal_queries_match_duckdb(connections: tuple, query: str) -> None:
    con, oracle = connections
    mine = con.execute(query)
    theirs = oracle.execute(query)
    assert mine.fetchall() == theirs.fetchall()
    assert [d[0] for d in mine.description] == [d[0] for d in theirs.description]


def test_blob_literal_inserts_into_plain_and_encrypted_columns(connections: tuple) -> None:
    con, oracle = connections
    statement = "INSERT INTO b VALUES (9, X'00ab', x'CD')"
    con.execute(statement)
    oracle.execute(statement)
    query = "SELECT plain, secret FROM b WHERE id = 9"
    assert (
        con.execute(query).fetchall() == oracle.execute(query).fetchall() == [(b"\0\xab", b"\xcd")]
    )
    raw = con._host._con.execute("SELECT secret FROM b WHERE id = 9").fetchall()[0][0]
    assert raw != b"\xcd"  # the host stored ciphertext, not the literal


# ---- EXPORT / IMPORT DATABASE: the parser ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "generated"),
    [
        ("EXPORT DATABASE 'out'", "EXPORT DATABASE 'out'"),
        ("export database 'out' (FORMAT parquet)", "EXPORT DATABASE 'out' (FORMAT parquet)"),
        ("EXPORT DATABASE db1 TO 'out'", "EXPORT DATABASE db1 TO 'out'"),
        ("import database 'out'", "IMPORT DATABASE 'out'"),
    ],
)
def test_export_and_import_database_parse(text: str, generated: str) -> None:
    [statement] = parse_statements(text)
    assert isinstance(statement, (ExportDatabase, ImportDatabase))
    assert statement.name == "out"
    assert to_sql(statement) == generated
    assert statement.meta["source_sql"] == text  # DuckDB receives it exactly as written


def test_export_options_keep_nested_parentheses_and_the_next_statement() -> None:
    first, second = parse_statements("EXPORT DATABASE 'o' (FORMAT csv, FORCE_QUOTE (a)); SELECT 1")
    assert first.args["options"].name == "(FORMAT csv, FORCE_QUOTE (a))"
    assert isinstance(second, exp.Select)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EXPORT DATABASE", "EXPORT DATABASE expects the directory as a quoted string"),
        ("IMPORT DATABASE out", "IMPORT DATABASE expects the directory as a quoted string"),
        ("EXPORT DATABASE 'o' (FORMAT csv", r"EXPORT DATABASE expects '\)' after its options"),
        ("EXPORT DATABASE db1 'o'", "EXPORT DATABASE db1 expects TO 'directory'"),
    ],
)
def test_malformed_export_and_import_are_programming_errors(text: str, message: str) -> None:
    with pytest.raises(ProgrammingError, match=message):
        parse_statements(text)


def test_columns_named_export_and_import_still_parse() -> None:
    [statement] = parse_statements("SELECT export, import FROM t")
    assert [s.name for s in statement.selects] == ["export", "import"]


# ---- ALTER COLUMN with T-SQL type names ----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "declared"),
    [
        ("UNIQUEIDENTIFIER", "UNIQUEIDENTIFIER"),
        ("DATETIME2", "DATETIME2"),
        ("datetime2(7)", "DATETIME2(7)"),
        ("NVARCHAR(40)", "NVARCHAR(40)"),
        ("nvarchar ( 40 )", "NVARCHAR(40)"),
        ("DATETIMEOFFSET", "DATETIMEOFFSET"),
        ("DATETIMEOFFSET(3)", "DATETIMEOFFSET(3)"),
        ("INT", "INT"),
        ("VARCHAR(11)", "VARCHAR(11)"),
    ],
)
@pytest.mark.parametrize("encrypted", [False, True])
def test_alter_column_with_tsql_type_names_parses_to_one_node(
    written: str, declared: str, encrypted: bool
) -> None:
    suffix = f" {ENC}" if encrypted else ""
    [statement] = parse_statements(f"ALTER TABLE t ALTER COLUMN c {written}{suffix}")
    assert isinstance(statement, exp.Alter)
    [action] = statement.args["actions"]
    assert isinstance(action, AlterColumnEncryption)
    assert action.this.name == "c"
    assert action.args["dtype"].meta["declared_type"] == declared
    assert (action.args.get("encryption") is not None) is encrypted
    # The text generated back parses to the same statement.
    assert parse_statements(to_sql(statement)) == [statement]


def test_duckdb_alter_column_forms_are_untouched(tmp_path: Path) -> None:
    [statement] = parse_statements("ALTER TABLE t ALTER COLUMN c TYPE BIGINT")
    assert statement.find(AlterColumnEncryption) is None
    assert to_sql(statement) == "ALTER TABLE t ALTER COLUMN c SET DATA TYPE BIGINT"

"""Fuzz target: the SQL front end, `parse_statements` then `describe`, on the fixture catalog of
tests/sql/fixtures/catalog.py (encrypted columns of every kind), from raw text or token recipes.

Random SQL must end in a Plan or an `engine.Error`; anything else is a crash, and the runner's
per-input timeout turns a hang into one. It must not execute anything or open DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import atheris

import engine
from engine.sql import describe, parse_statements
from tests.sql.fixtures.catalog import CATALOG

# The first byte selects the mode: bit 0 clear means the rest is SQL text (UTF-8), set means it
# is a recipe that assembles tokens from VOCABULARY; bit 1 says whether an enclave is available.
RAW_TEXT = 0
TOKENS = 1
ENCLAVE_AVAILABLE = 2

_CEK_OPTIONS = (
    "(COLUMN_ENCRYPTION_KEY = cek_det, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
_ENCLAVE_OPTIONS = (
    "(COLUMN_ENCRYPTION_KEY = cek_enclave, ENCRYPTION_TYPE = RANDOMIZED, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
# Words, names of the fixture catalog, literals and AE DDL fragments; assembling these reaches
# the binder and classifier far sooner than mutating raw bytes does.
VOCABULARY: tuple[str, ...] = (
    "SELECT", "DISTINCT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "ESCAPE",
    "IS", "NULL", "ORDER BY", "GROUP BY", "HAVING", "LIMIT", "JOIN", "LEFT JOIN", "ON", "USING",
    "UNION", "UNION ALL", "EXCEPT", "INTERSECT", "AS", "CASE", "WHEN", "THEN", "ELSE", "END",
    "WITH", "EXISTS", "INSERT INTO", "VALUES", "UPDATE", "SET", "DELETE FROM", "CREATE TABLE",
    "ALTER TABLE", "ALTER COLUMN", "ADD COLUMN", "DROP COLUMN", "DROP TABLE", "CAST", "COUNT",
    "MIN", "MAX", "SUM", "AVG", "COALESCE", "OVER", "PARTITION BY", "ASC", "DESC",
    "patients", "visits", "archive", "plain", "p", "v", "id", "name", "ssn", "salary", "dob",
    "city", "zip", "patient_ssn", "note", "other_ssn", "ssn_text", "a", "b", "*",
    "?", "$1", "1", "0", "-1", "2.5", "'x'", "'111-11-1111'", "N'é'", "DATE '2000-01-01'",
    "X'00'", "TRUE", "(", ")", ",", ";", ".", "=", "<>", "!=", "<", "<=", ">", ">=", "+", "-",
    "||", "::", "INTEGER", "VARCHAR", "CHAR(11)", "BLOB",
    "CREATE COLUMN MASTER KEY", "CREATE COLUMN ENCRYPTION KEY", "ALTER COLUMN ENCRYPTION KEY",
    "DROP COLUMN MASTER KEY", "DROP COLUMN ENCRYPTION KEY", "WITH VALUES", "ADD VALUE",
    "DROP VALUE", "KEY_STORE_PROVIDER_NAME = 'PEM_FILE'", "KEY_PATH = 'k.pem'",
    "ENCLAVE_COMPUTATIONS", "(SIGNATURE = 0x01)", "COLUMN_MASTER_KEY = cmk_plain",
    "ALGORITHM = 'RSA_OAEP'", "ENCRYPTED_VALUE = 0x01", "cek_det", "cek_rnd", "cek_enclave",
    "cmk_plain", "cmk_enclave", "ENCRYPTED WITH", _CEK_OPTIONS, _ENCLAVE_OPTIONS,
)  # fmt: skip

DICTIONARY: tuple[bytes, ...] = tuple(
    word.encode() for word in VOCABULARY if len(word) <= 40 and not word.isspace()
)

_SEED_SQL = (
    "SELECT id FROM patients WHERE ssn = '111-11-1111'",
    "SELECT ssn, COUNT(*) FROM patients GROUP BY ssn",
    "SELECT p.name FROM patients p JOIN visits v ON p.ssn = v.patient_ssn",
    "SELECT * FROM patients WHERE dob BETWEEN ? AND ? ORDER BY dob",
    "SELECT name FROM patients WHERE city LIKE 'pa%' ESCAPE '!'",
    "INSERT INTO patients (id, ssn, salary) VALUES (5, '555-55-5555', 10)",
    "UPDATE patients SET salary = 1 WHERE ssn = ?",
    "DELETE FROM visits WHERE patient_ssn IN ('1', '2')",
    "SELECT MAX(zip), MIN(dob) FROM patients HAVING COUNT(DISTINCT zip) > 1",
    "CREATE TABLE t (a INT, s CHAR(11) ENCRYPTED WITH " + _CEK_OPTIONS + ")",
    "ALTER TABLE plain ALTER COLUMN b VARCHAR ENCRYPTED WITH " + _ENCLAVE_OPTIONS,
    "CREATE COLUMN MASTER KEY k WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', KEY_PATH = 'k.pem')",
    "CREATE COLUMN ENCRYPTION KEY c WITH VALUES (COLUMN_MASTER_KEY = cmk_plain, "
    "ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0x01)",
    "SELECT a FROM plain UNION SELECT id FROM archive; BEGIN; COMMIT",
)
_FIXTURES = Path(__file__).resolve().parents[1] / "sql" / "fixtures"


def seeds() -> Iterable[bytes]:
    """Raw-text seeds (ours and every statement of the rewrite fixtures), with and without an
    enclave, and a few token recipes."""
    texts = list(_SEED_SQL)
    for fixture in sorted(_FIXTURES.glob("*.sql")):
        lines = [ln for ln in fixture.read_text().splitlines() if not ln.startswith("--")]
        texts += [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
    for text in texts:
        for flags in (RAW_TEXT, RAW_TEXT | ENCLAVE_AVAILABLE):
            yield bytes([flags]) + text.encode("utf-8")
    for recipe in (bytes(range(40)), bytes(range(60, 120)), bytes(range(255, 120, -3))):
        yield bytes([TOKENS | ENCLAVE_AVAILABLE]) + recipe


def sql_from(data: bytes) -> tuple[str, bool]:
    """The SQL text and the enclave flag an input stands for.

    >>> sql_from(b"\\x02SELECT 1")
    ('SELECT 1', True)
    >>> text, enclave = sql_from(b"\\x01" + bytes(8))
    >>> enclave, text.split()[0]
    (False, 'SELECT')
    """
    if not data:
        return "", False
    flags, rest = data[0], data[1:]
    enclave_available = bool(flags & ENCLAVE_AVAILABLE)
    if not flags & TOKENS:
        return rest.decode("utf-8", errors="replace"), enclave_available
    provider = atheris.FuzzedDataProvider(rest)
    words = []
    while provider.remaining_bytes():
        choice = provider.ConsumeIntInRange(0, len(VOCABULARY))
        if choice == len(VOCABULARY):  # one slot past the vocabulary: a free-form fragment
            words.append(provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 8)))
        else:
            words.append(VOCABULARY[choice])
    return " ".join(words), enclave_available


def test_one_input(data: bytes) -> None:
    """Parse and describe; only engine.Error may escape.

    >>> test_one_input(b"\\x00SELECT ssn FROM patients WHERE ssn = 'x'")
    >>> test_one_input(b"\\x00SELEKT")
    """
    text, enclave_available = sql_from(data)
    try:
        statements = parse_statements(text)
        for statement in statements:
            plan = describe(statement, CATALOG, enclave_available=enclave_available)
            # A plan is always for the snapshot it was described against.
            assert plan.catalog_version == CATALOG.version
    except engine.Error:
        return

"""The tag column rules (engine.sql.tag_columns, rewrite_tag_lookups, rewrite_tag_writes):
the Python and the DuckDB definitions of the tag agree on any bytes, each rewrite produces the
expected text, leaves alone what it must not touch, and the rewritten SQL returns what the
original returns in DuckDB."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import errors
from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.describe import describe
from engine.sql.dialect import parse_statements
from engine.sql.tag_columns import cell_tag, cell_tags, tag_sql

_DET = Encryption("cek1", "DETERMINISTIC")
_OTHER = Encryption("cek2", "DETERMINISTIC")
_KEYS = (
    ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),)),
    ColumnEncryptionKey("cek2", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),)),
)
CATALOG = CatalogSnapshot(
    3,
    (ColumnMasterKey("cmk1", "PEM_FILE", "/k"),),
    _KEYS,
    (
        TableInfo(
            "p",
            (
                ColumnInfo("id", "INTEGER"),
                ColumnInfo("ssn", "VARCHAR", _DET, "__ae_tag_ssn"),
                ColumnInfo("old", "VARCHAR", _DET),  # made before tags: no tag column
            ),
        ),
        TableInfo(
            "q", (ColumnInfo("id", "INTEGER"), ColumnInfo("ssn", "VARCHAR", _DET, "__ae_tag_ssn"))
        ),
        TableInfo(
            "r", (ColumnInfo("id", "INTEGER"), ColumnInfo("ssn", "VARCHAR", _OTHER, "__ae_tag_ssn"))
        ),
        TableInfo("plain", (ColumnInfo("id", "INTEGER"), ColumnInfo("s", "VARCHAR"))),
        TableInfo(
            "keyed",
            (ColumnInfo("id", "INTEGER"), ColumnInfo("ssn", "VARCHAR", _DET, "__ae_tag_ssn", True)),
        ),
    ),
)


def _plan(sql: str):  # type: ignore[no-untyped-def]
    return describe(parse_statements(sql)[0], CATALOG, enclave_available=False)


# Tag definitions.


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80)), max_size=20))
def test_python_duckdb_and_vectorized_tags_agree(cells: list[bytes | None]) -> None:
    con = duckdb.connect()
    con.register("cells", pa.table({"c": pa.array(cells, pa.binary())}))
    in_duckdb = [row[0] for row in con.execute(f"SELECT {tag_sql('c')} FROM cells").fetchall()]
    expected = [cell_tag(c) for c in cells]
    assert in_duckdb == expected
    assert cell_tags(pa.array(cells, pa.binary())).to_pylist() == expected
    chunked = pa.chunked_array([pa.array(cells[:3], pa.binary()), pa.array(cells[3:], pa.binary())])
    assert cell_tags(chunked).to_pylist() == expected


def test_tag_is_the_first_sixty_bits_after_the_version_byte() -> None:
    cell = bytes([1]) + bytes(range(0x10, 0x50))
    assert cell_tag(cell) == int.from_bytes(cell[1:9], "big") >> 4
    assert cell_tag(None) == 0 and 0 <= cell_tag(b"\x01" + b"\xff" * 64) < 2**63


# Lookups.

LOOKUPS = [
    (
        "SELECT id FROM p WHERE ssn = ?",
        'SELECT p.id AS id FROM p AS p WHERE (p."__ae_tag_ssn" = ? '
        'AND COALESCE(p.ssn = ?, p."__ae_tag_ssn" IS NULL))',
        [True, False],
    ),
    (
        "SELECT id FROM p WHERE 'x' = ssn AND id > 1",
        'SELECT p.id AS id FROM p AS p WHERE (p."__ae_tag_ssn" = ? '
        'AND COALESCE(? = p.ssn, p."__ae_tag_ssn" IS NULL)) AND p.id > 1',
        [True, False],
    ),
    (
        "SELECT id FROM p AS x WHERE x.ssn IN ('a', ?) OR id = 3",
        'SELECT x.id AS id FROM p AS x WHERE (x."__ae_tag_ssn" IN (?, ?) '
        'AND COALESCE(x.ssn IN (?, ?), x."__ae_tag_ssn" IS NULL)) OR x.id = 3',
        [True, True, False, False],
    ),
    (
        "DELETE FROM p WHERE ssn = ?",
        'DELETE FROM p WHERE ("__ae_tag_ssn" = ? AND COALESCE(ssn = ?, "__ae_tag_ssn" IS NULL))',
        [True, False],
    ),
]


@pytest.mark.parametrize(("sql", "expected", "tags"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_lookup_rewrites(sql: str, expected: str, tags: list[bool]) -> None:
    plan = _plan(sql)
    assert plan.sql == expected
    assert [spec.tag for spec in plan.parameters] == tags
    # Every tag ? has a cell ? for the same value and column beside it.
    cells = {(s.source, s.target) for s in plan.parameters if not s.tag}
    assert all((s.source, s.target) in cells for s in plan.parameters if s.tag)
    # The host describes the text before the rewrite (tag columns are hidden from it).
    assert plan.parameterized_sql is not None and "__ae_tag" not in plan.parameterized_sql


UNTOUCHED = [
    "SELECT id FROM p WHERE NOT (ssn = ?)",  # NOT turns FALSE into TRUE, NULL stays NULL
    "SELECT ssn = ? AS same FROM p",  # a value, not a filter
    "SELECT id FROM p WHERE (ssn = ?) IS NULL",
    "SELECT id FROM p WHERE old = ?",  # no tag column
    "SELECT id FROM p WHERE ssn NOT IN ('a', 'b')",
    "SELECT s.id FROM (SELECT id, ssn FROM p) AS s WHERE s.ssn = ?",  # not a base table
    "WITH p AS (SELECT id, ssn FROM q) SELECT id FROM p WHERE ssn = ?",  # a CTE named p
    "SELECT p.id FROM p JOIN r ON p.ssn = r.ssn",  # another key: refused before any rewrite
    "SELECT p.id FROM p JOIN q ON p.ssn = q.ssn",  # joins on the cells alone are faster
    "SELECT id FROM keyed WHERE ssn = ?",  # DuckDB's index finds it; a tag would stop the index
    "SELECT ssn, count(*) FROM p GROUP BY ssn HAVING ssn = ?",  # no tag after GROUP BY
]


@pytest.mark.parametrize("sql", UNTOUCHED)
def test_lookups_left_alone(sql: str) -> None:
    try:
        plan = _plan(sql)
    except errors.Error:
        return  # refused for other reasons, which is also not a tag rewrite
    assert plan.sql is not None and "__ae_tag" not in plan.sql
    assert not any(spec.tag for spec in plan.parameters)


# Writes.

WRITES = [
    (
        "INSERT INTO p VALUES (1, ?, ?)",
        'INSERT INTO p ("id", "ssn", "old", "__ae_tag_ssn") VALUES (1, ?, ?, ?)',
        [False, False, True],
    ),
    (
        "INSERT INTO p (ssn, id) VALUES ('a', 1), (NULL, 2)",
        'INSERT INTO p ("ssn", "id", "__ae_tag_ssn") VALUES (?, 1, ?), (NULL, 2, '
        "COALESCE(TRY_CAST('0x' || SUBSTRING(HEX(NULL), 3, 15) AS BIGINT), 0))",
        [False, True],
    ),
    (
        "INSERT INTO p (id) VALUES (7)",
        'INSERT INTO p ("id", "__ae_tag_ssn") VALUES (7, 0)',
        [],
    ),
    (
        "INSERT INTO p (id, ssn) SELECT id, ssn FROM q",
        'INSERT INTO p ("id", "ssn", "__ae_tag_ssn") SELECT __ae_source.c0, __ae_source.c1, '
        "COALESCE(TRY_CAST('0x' || SUBSTRING(HEX(__ae_source.c1), 3, 15) AS BIGINT), 0) "
        "FROM (SELECT q.id AS id, q.ssn AS ssn FROM q AS q) AS __ae_source(c0, c1)",
        [],
    ),
    (
        "UPDATE p SET ssn = ? WHERE id = 1",
        'UPDATE p SET ssn = ?, "__ae_tag_ssn" = ? WHERE id = 1',
        [False, True],
    ),
    (
        "UPDATE p SET id = id + 1",
        "UPDATE p SET id = id + 1",
        [],
    ),
]


@pytest.mark.parametrize(("sql", "expected", "tags"), WRITES, ids=[c[0] for c in WRITES])
def test_write_rewrites(sql: str, expected: str, tags: list[bool]) -> None:
    plan = _plan(sql)
    assert plan.sql == expected
    assert [spec.tag for spec in plan.parameters] == tags


REFUSED = [
    # Refused by the classifier already (every encrypted table), and so never tag-less:
    ("INSERT INTO p BY NAME SELECT 1 AS id", None),
    ("INSERT INTO p (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2", None),
    ("INSERT INTO p (id) VALUES (1) RETURNING *", None),
    # Refused by rewrite_tag_writes:
    ("INSERT INTO p DEFAULT VALUES", "hidden tag column"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_writes_that_would_skip_the_tag_are_refused(sql: str, message: str | None) -> None:
    with pytest.raises(errors.DatabaseError, match=message) as raised:
        _plan(sql)
    assert isinstance(raised.value, (errors.NotSupportedError, errors.ProgrammingError))


def test_rewritten_statements_answer_as_the_originals_in_duckdb() -> None:
    """The differential check of the rules on plaintext stand-ins: tags filled by DuckDB's own
    expression over BLOBs, the statements run as rewritten and as written."""
    con = duckdb.connect()
    for table in ("p", "q"):
        extra = ", old BLOB" if table == "p" else ""
        con.execute(
            f'CREATE TABLE {table} (id INTEGER, ssn BLOB{extra}, "__ae_tag_ssn" BIGINT NOT NULL)'
        )
        con.execute(
            f'INSERT INTO {table} (id, ssn, "__ae_tag_ssn") SELECT i, '
            f"CASE WHEN i % 4 = 0 THEN NULL ELSE ('\\x01' || (i % 3)::VARCHAR)::BLOB END, 0 "
            "FROM range(12) AS t(i)"
        )
        con.execute(f'UPDATE {table} SET "__ae_tag_ssn" = {tag_sql("ssn")}')
    value = b"\x011"
    for sql, _expected, _ in LOOKUPS[:2]:
        plan = _plan(sql)
        values = [cell_tag(value) if s.tag else value for s in plan.parameters]
        original = plan.parameterized_sql or sql
        plain = [value] * original.count("?")
        assert sorted(con.execute(plan.sql, values).fetchall()) == sorted(
            con.execute(original, plain).fetchall()
        )

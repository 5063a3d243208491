"""Result column names: for queries over encrypted columns, Cursor.description, fetchdf and
fetch_arrow_table name columns exactly as plaintext DuckDB does for the same query (the oracle),
and engine.sql.result_names renders DuckDB's name of each expression form it claims to know."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine import errors
from engine.sql.dialect import parse_statements
from engine.sql.result_names import DUCKDB_KEYWORDS, duckdb_column_name
from tests.support.keys import CEK1_ENCLAVE_KEYS, make_cmk

COLUMNS = "id INT, name VARCHAR, n INT, s VARCHAR(20), d VARCHAR(20)"
ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
pytestmark = pytest.mark.filterwarnings(
    "ignore::engine.client.enclave_session.InsecureEnclaveWarning"
)
ROWS = [
    (1, "a", 3, "x", "k1"),
    (2, "b", 5, "z", "k1"),
    (3, "c", None, None, "k2"),
    (4, "d", -2, "y", None),
]

# ---- the renderer against DuckDB, on a plaintext table -------------------------------------

_oracle = duckdb.connect()
_oracle.execute('CREATE TABLE t (id INT, name VARCHAR, n INT, s VARCHAR, "Mixed" INT)')


def _duckdb_name(expression: str) -> str:
    return str(_oracle.execute(f"SELECT {expression} FROM t").description[0][0])


def _my_name(expression: str) -> str | None:
    return duckdb_column_name(parse_statements(f"SELECT {expression} FROM t")[0].selects[0])


@pytest.mark.parametrize(
    "expression",
    [
        "MIN(n)",
        "Max(t.n)",
        "max(T.N)",
        'min("Mixed")',
        "count(*)",
        "count()",
        "COUNT(DISTINCT s)",
        "count(n) FILTER (WHERE n > 1)",
        "sum(n) / count(n)",
        "n + 1",
        "-n",
        "-1",
        "n - 1 * 2",
        "(n + 1) * 2",
        "n // 2",
        "n % 2 = 0",
        "s || 'x'",
        "'it''s'",
        "upper(s)",
        "s <> 'a'",
        "n > 1 AND n < 3 AND n != 2",
        "n > 1 OR s IS NULL",
        "NOT (n > 1)",
        "n IS NOT NULL",
        "n IS DISTINCT FROM 1",
        "n BETWEEN 1 AND 2",
        "n NOT IN (1, 2)",
        "s LIKE 'a%'",
        "s NOT ILIKE 'a%'",
        "CAST(n AS VARCHAR)",
        "n::INT",
        "TRY_CAST(s AS DECIMAL(10,2))",
        "DATE '2024-01-01'",
        "CASE WHEN n > 1 THEN 'big' END",
        "CASE n WHEN 1 THEN 'one' ELSE 'other' END",
        "coalesce(n, 0)",
        "X'01ff'",
        "1.50",
        "TRUE",
        "NULL",
        "mean(n)",
    ],
)
def test_each_known_form_gets_duckdbs_name(expression: str) -> None:
    assert _my_name(expression) == _duckdb_name(expression)


def test_keyword_list_is_the_installed_duckdbs() -> None:
    rows = _oracle.execute("SELECT keyword_name FROM duckdb_keywords()").fetchall()
    assert {row[0] for row in rows} == DUCKDB_KEYWORDS


@pytest.mark.parametrize("expression", ["substr(s, 1, 2)", "n IN (SELECT 1)", "[1, 2]"])
def test_unknown_forms_give_no_name_rather_than_a_guess(expression: str) -> None:
    assert _my_name(expression) is None


_leaves = st.sampled_from(["n", "t.n", "id", "1", "2.5", "'a'", "NULL", "-3", "s"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.sampled_from(["+", "-", "*", "/", "%", "=", "<>", "<", ">=", "AND", "OR", "||"])
    return st.one_of(
        st.tuples(children, binary, children).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(st.sampled_from(["abs", "upper", "lower", "coalesce"]), children).map(
            lambda p: f"{p[0]}({p[1]})"
        ),
        children.map(lambda c: f"NOT ({c})"),
        children.map(lambda c: f"(({c}) IS NULL)"),
        children.map(lambda c: f"CAST({c} AS VARCHAR)"),
        st.tuples(children, children).map(lambda p: f"CASE WHEN {p[0]} THEN {p[1]} END"),
    )


_EXPRESSIONS = st.recursive(_leaves, _combine, max_leaves=6)


@given(_EXPRESSIONS)
@settings(max_examples=150, deadline=None)
def test_generated_expressions_get_duckdbs_name(expression: str) -> None:
    try:
        expected = _duckdb_name(expression)
    except duckdb.Error:
        return  # not a valid query for DuckDB (a type error): nothing to name
    if expression in ("n", "t.n", "id", "s"):
        return  # a bare column: DuckDB's binder names it, and the renderer leaves it alone
    # Every form of this grammar is one the renderer knows, so None would be a failure too.
    assert _my_name(expression) == expected


# ---- through engine.connect: encrypted columns and the rewriter, against DuckDB -----------


@pytest.fixture(scope="module")
def connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    key_dir = tmp_path_factory.mktemp("names-keys")
    make_cmk(key_dir)
    con = engine.connect(":memory:", key_dir=str(key_dir), attestation_protocol="none")
    for statement in CEK1_ENCLAVE_KEYS:
        con.execute(statement)
    con.execute(
        f"CREATE TABLE t (id INT, name VARCHAR, n INT {ENC.format('RANDOMIZED')}, "
        f"s VARCHAR(20) {ENC.format('RANDOMIZED')}, d VARCHAR(20) "
        f"{ENC.format('DETERMINISTIC')})"
    )
    con.cursor().executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
    oracle = duckdb.connect()
    oracle.execute(f"CREATE TABLE t ({COLUMNS})")
    oracle.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
    yield con, oracle
    con.close()
    oracle.close()


QUERIES = [
    "SELECT * FROM t ORDER BY id",
    "SELECT t.* FROM t ORDER BY id",
    "SELECT id, name, n, s, d FROM t ORDER BY id",
    "SELECT ID, T.Name, D FROM t ORDER BY id",
    'SELECT n AS Amount, s AS "Text Value" FROM t ORDER BY id',
    "SELECT MIN(n), MAX(s), COUNT(DISTINCT d) FROM t",
    "SELECT min(n) AS lo, max(n) hi, count(*), count(d) FROM t",
    "SELECT d, count(*), min(n) FROM t GROUP BY d ORDER BY min(id)",
    "SELECT id + 1, d FROM t WHERE d = 'k1' ORDER BY 1",
    "SELECT id, upper(name), X'01' FROM t WHERE n > 1 ORDER BY id",
    "SELECT count(*) FROM t WHERE s = 'x'",
    "SELECT *, id * 2 FROM t WHERE d = 'k2'",
    "SELECT id FROM t WHERE n BETWEEN 0 AND 4 ORDER BY n",
    "SELECT count(*) FROM (SELECT DISTINCT d FROM t)",
    "SELECT sum(n), avg(n) FROM t",
    "SELECT s, count(*), min(n) FROM t GROUP BY s",
    "SELECT s AS S2, max(n) FROM t GROUP BY s HAVING max(n) > 1",
    "SELECT id, n FROM t ORDER BY n DESC LIMIT 2",
    "SELECT a.id, b.d FROM t a JOIN t b ON a.d = b.d WHERE a.id = 1",
    "WITH c AS (SELECT n, d FROM t) SELECT max(n), d FROM c GROUP BY d",
    # Unaliased entries of derived tables and CTEs pass their names on through * and x.*.
    "SELECT * FROM (SELECT d, MAX(n) FROM t GROUP BY d)",
    "SELECT * FROM (SELECT s, max(n), count(*) FROM t GROUP BY s) AS x",
    "SELECT x.* FROM (SELECT d, count(*), count(d) FROM t GROUP BY d) x",
    "WITH c AS (SELECT d, max(n) FROM t GROUP BY d) SELECT * FROM c",
    "SELECT * FROM (SELECT min(n), max(n), d FROM t GROUP BY d) WHERE d = 'k1'",
    "SELECT *, 1 FROM (SELECT d, max(n) FROM t GROUP BY d)",
    "SELECT * FROM t, (SELECT count(*) FROM t) ORDER BY id",
    "SELECT * FROM (SELECT id + 1, d FROM t) ORDER BY 1",
    "SELECT * FROM (SELECT id, upper(name), n FROM t WHERE n > 1) ORDER BY id",
    "SELECT * FROM (SELECT * FROM (SELECT id * 2, d FROM t WHERE d = 'k1')) ORDER BY 1",
    "WITH c AS (SELECT id * 2, d FROM t), e AS (SELECT * FROM c) SELECT * FROM e ORDER BY 1",
    "SELECT * FROM (SELECT id + 1, upper(name) FROM t UNION ALL SELECT id, name FROM t)",
    "SELECT x.*, y.* FROM (SELECT id, id + 1 FROM t) x JOIN (SELECT id, lower(name), n FROM t) y "
    "ON x.id = y.id",
    # DuckDB makes a derived table's names unique; an alias or a column alias list wins.
    'SELECT * FROM (SELECT id + 1, id + 1, id + 1 AS "(id + 1)_1", d FROM t) ORDER BY 1',
    "SELECT * FROM (SELECT max(n) AS Top, d FROM t GROUP BY d)",
    "SELECT * FROM (SELECT max(n), d FROM t GROUP BY d) x(a)",
    "SELECT * FROM (SELECT d, max(n) FROM t GROUP BY d) x(a, b)",
    "WITH c(k, m) AS (SELECT d, max(n) FROM t GROUP BY d) SELECT * FROM c",
    "SELECT * FROM (SELECT 'lit', X'01', 2.5, NULL, d FROM t) ORDER BY d",
    "SELECT * FROM (SELECT 'lit', d FROM t) x(a) ORDER BY d",
]


@pytest.mark.parametrize("query", QUERIES)
def test_result_names_match_duckdb(connections: tuple, query: str) -> None:
    con, oracle = connections
    expected = [column[0] for column in oracle.execute(query).description]
    cursor = con.execute(query)
    assert [column[0] for column in cursor.description] == expected
    # Rows as a multiset: a GROUP BY without ORDER BY has no order in either engine.
    assert sorted(cursor.fetchall(), key=repr) == sorted(oracle.execute(query).fetchall(), key=repr)
    assert con.execute(query).fetch_arrow_table().column_names == expected
    assert list(con.execute(query).fetchdf().columns) == expected


_ROW_ITEMS = ["id", "n", "s", "d", "id + 1", "upper(name)", "X'01'", "n AS N1", "*", "t.*", "'lit'"]
_AGGREGATE_ITEMS = [
    "min(n)",
    "max(s)",
    "count(*)",
    "count(d)",
    "COUNT(DISTINCT d)",
    "sum(n)",
    "avg(n)",
    "max(n) AS top",
    'count(*) AS "All"',
]


@given(
    st.one_of(
        st.lists(st.sampled_from(_ROW_ITEMS), min_size=1, max_size=4),
        st.lists(st.sampled_from(_AGGREGATE_ITEMS), min_size=1, max_size=4),
    )
)
@settings(max_examples=40, deadline=None)
def test_generated_select_lists_are_named_as_in_duckdb(
    connections: tuple, items: list[str]
) -> None:
    con, oracle = connections
    query = f"SELECT {', '.join(items)} FROM t"
    expected = [column[0] for column in oracle.execute(query).description]
    assert [column[0] for column in con.execute(query).description] == expected


# A derived table may not hold one column twice under * (the engine cannot expand it), so no
# star items and no repeats here.
_DERIVED_ROW_ITEMS = [item for item in _ROW_ITEMS if "*" not in item]


@given(
    st.one_of(
        st.lists(st.sampled_from(_DERIVED_ROW_ITEMS), min_size=1, max_size=4, unique=True),
        st.lists(st.sampled_from(_AGGREGATE_ITEMS), min_size=1, max_size=4, unique=True),
    ),
    st.sampled_from(
        [
            "SELECT * FROM ({}) AS x",
            "SELECT x.* FROM ({}) x",
            "WITH c AS ({}) SELECT * FROM c",
            "SELECT * FROM (SELECT * FROM ({}))",
        ]
    ),
)
@settings(max_examples=40, deadline=None)
def test_generated_derived_tables_pass_names_on_as_in_duckdb(
    connections: tuple, items: list[str], wrapper: str
) -> None:
    con, oracle = connections
    query = wrapper.format(f"SELECT {', '.join(items)} FROM t")
    expected = [column[0] for column in oracle.execute(query).description]
    try:
        cursor = con.execute(query)
    except errors.NotSupportedError:
        return  # enclave aggregates two levels down are refused: nothing to name
    assert [column[0] for column in cursor.description] == expected

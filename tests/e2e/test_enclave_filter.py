"""Random AND/OR/NOT trees of enclave and plaintext predicates, through engine.connect, against
plaintext DuckDB: three-valued logic must survive the one-call-per-conjunction rewrite in the
SELECT list (where NULL is visible), not only in WHERE; and a tampered cell behind a live row of
a later conjunct still raises CellAuthenticationError, never a wrong answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlglot import exp

import engine
from engine.errors import CellAuthenticationError
from tests.support.enclave_e2e import RANDOMIZED, enclave_connection
from tests.support.enclave_e2e import quiet_fetchall as _quiet
from tests.support.keys import ENCLAVE_KEYS, make_cmk

TABLE = "CREATE TABLE t (id INTEGER, p INTEGER, a INTEGER {enc}, b INTEGER {enc}, s VARCHAR {enc})"
ENCLAVE_COLUMNS = ("a", "b")


def _rows() -> list[tuple[Any, ...]]:
    rng = random.Random(5)

    def value() -> int | None:
        return None if rng.random() < 0.25 else rng.randint(-3, 3)

    return [
        (i, value(), value(), value(), None if rng.random() < 0.2 else rng.choice("xyz") * 2)
        for i in range(60)
    ]


ROWS = _rows()


@pytest.fixture(scope="module")
def connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with enclave_connection(tmp_path_factory.mktemp("filter")) as ours:
        ours.execute(TABLE.format(enc=RANDOMIZED))
        ours.cursor().executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
        oracle = duckdb.connect()
        oracle.execute(TABLE.format(enc=""))
        oracle.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
        yield ours, oracle
        oracle.close()


# Leaves: enclave comparisons, BETWEEN, IN, LIKE, IS [NOT] DISTINCT FROM; plaintext predicates.
_V = st.integers(-3, 3)
_ENCLAVE_LEAF = st.one_of(
    st.builds(
        "{} {} {}".format,
        st.sampled_from(ENCLAVE_COLUMNS),
        st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
        _V,
    ),
    st.builds("{} BETWEEN {} AND {}".format, st.sampled_from(ENCLAVE_COLUMNS), _V, _V),
    st.builds("{} IN ({}, {})".format, st.sampled_from(ENCLAVE_COLUMNS), _V, _V),
    st.builds("s LIKE '{}%'".format, st.sampled_from("xyz")),
    st.builds(
        "{} IS {}DISTINCT FROM {}".format,
        st.sampled_from(ENCLAVE_COLUMNS),
        st.sampled_from(["", "NOT "]),
        _V,
    ),
    st.sampled_from(["a < b", "a = b", "a IS NOT DISTINCT FROM b"]),
)
_PLAIN_LEAF = st.one_of(
    st.builds("p {} {}".format, st.sampled_from(["<", "=", ">"]), _V),
    st.just("p IS NULL"),
)
_TREE = st.recursive(
    st.one_of(_ENCLAVE_LEAF, _ENCLAVE_LEAF, _PLAIN_LEAF),
    lambda inner: st.one_of(
        st.builds("({} AND {})".format, inner, inner),
        st.builds("({} AND {} AND {})".format, inner, inner, inner),
        st.builds("({} OR {})".format, inner, inner),
        st.builds("(NOT {})".format, inner),
    ),
    max_leaves=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(first=_TREE, second=_TREE)
def test_random_predicate_trees_match_duckdb(
    connections: tuple[Any, Any], first: str, second: str
) -> None:
    ours, oracle = connections
    # describe merges identical enclave operations of one statement differently on the client
    # and the host (a known issue outside this test's subject): no predicate may repeat.
    tree = sqlglot.parse_one(f"SELECT {first}, {second}", read="duckdb")
    kinds = (exp.Binary, exp.Between, exp.In, exp.Is)
    leaves = [node.sql() for node in tree.find_all(*kinds) if not isinstance(node, exp.Connector)]
    assume(len(set(leaves)) == len(leaves))
    # The SELECT list shows NULL (where three-valued logic shows); WHERE filters on the other.
    sql = f"SELECT id, {first} FROM t WHERE {second} OR p IS NULL ORDER BY id"
    assert _quiet(ours, sql) == oracle.execute(sql).fetchall(), sql


def test_a_tampered_cell_behind_a_live_row_is_refused(tmp_path: Path) -> None:
    make_cmk(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVESQL_PLATFORM_DIR", str(tmp_path / "platform"))
        database = str(tmp_path / "db.duckdb")
        con = engine.connect(database, key_dir=str(tmp_path), attestation_protocol="none")
        for statement in ENCLAVE_KEYS:
            con.execute(statement)
        con.execute(TABLE.format(enc=RANDOMIZED))
        rows = [(1, 0, 1, 1, "xx"), (2, 0, 9, 1, "xx"), (3, 0, None, 1, "xx")]
        con.cursor().executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
        con.close()
        # The storage is the host's: flip one bit of b's cell in rows 2 and 3.
        raw = duckdb.connect(database)
        for row_id, cell in raw.execute("SELECT id, b FROM t WHERE id IN (2, 3)").fetchall():
            bad = bytearray(cell)
            bad[-1] ^= 1
            raw.execute("UPDATE t SET b = ? WHERE id = ?", [bytes(bad), row_id])
        raw.close()
        con = engine.connect(database, key_dir=str(tmp_path), attestation_protocol="none")
        try:
            # Row 2's first conjunct is FALSE: its b cell is never read and cannot change the
            # answer. Row 3's is NULL, so b is read there and the tampering is caught.
            assert _quiet(con, "SELECT id FROM t WHERE a < 5 AND b = 1 AND id < 3") == [(1,)]
            with pytest.raises(CellAuthenticationError):
                _quiet(con, "SELECT id, a < 5 AND b = 1 FROM t ORDER BY id")
            with pytest.raises(CellAuthenticationError):
                _quiet(con, "SELECT id FROM t WHERE b = 1 AND a < 5")
        finally:
            con.close()

"""engine/host/native_stage.py: which stage-one SQL becomes one __ee_stage_k aggregate, with
which slots and layout, and how its LIST(BLOB) result spreads back over the calls' columns."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine.host.enclave_execution import stage_layout
from engine.host.native_stage import native_stage
from engine.sql.plan import AggregateCall

SUM, AVG, SUM_EXPR = 12, 13, 19
# A program of two slots: slot 0 encrypted DECIMAL(.,2) under CEK 1, slot 1 plain DECIMAL(.,2).
PROGRAM = bytes([1, 2, 1, 1, 0, 4, 2, 2, 0, 0, 4, 2, 5, 0, 1, 0, 1, 1, 6])

SHARED = (
    "SELECT t.g AS g, LIST(STRUCT_PACK(__ee_s_1_0_3_0 := t.x, __ee_s_2_0 := t.y, "
    "__ee_s_3_1 := CAST(t.p AS DECIMAL(38, 2)))) AS _col_1, CAST(NULL AS BLOB) AS _col_2, "
    "CAST(NULL AS BLOB) AS _col_3, LIST(t.y) AS _col_4, COUNT(*) AS _col_5 "
    "FROM t AS t WHERE t.k > ? GROUP BY t.g"
)
CALLS = [
    AggregateCall(1, 1, 4, SUM, decimal_scale=2),
    AggregateCall(2, 1, 4, AVG, decimal_scale=2),
    AggregateCall(3, 1, 4, SUM_EXPR, kind="expression", constant=PROGRAM),
    AggregateCall(4, 1, 4, 15),  # MAX: stays a LIST and a call of its own
]


def test_a_shared_stage_becomes_one_aggregate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVESQL_NATIVE_AGGREGATES", raising=False)
    stage = native_stage(SHARED, CALLS)
    assert stage is not None
    assert stage.holder == 1 and stage.calls == tuple(CALLS[:3])
    # x, y and the plain p (normalized by __ee_plain): three slots, each once.
    assert stage.layout == stage_layout(CALLS[:3], [[0], [1], [0, 2]], 3)
    sql = stage.sql(77)
    assert (
        "__EE_STAGE_3(t.x, t.y, __EE_PLAIN(CAST(t.p AS DECIMAL(38, 2))), "
        "CAST(77 AS UBIGINT), CAST(" in sql
    )
    assert "AS _col_1, CAST(NULL AS BLOB) AS _col_2, CAST(NULL AS BLOB) AS _col_3" in sql
    # (sqlglot writes DuckDB's LIST as its alias ARRAY_AGG.)
    assert "ARRAY_AGG(t.y) AS _col_4" in sql and "WHERE t.k > ?" in sql
    assert "STRUCT_PACK" not in sql


def test_the_result_spreads_over_the_calls_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVESQL_NATIVE_AGGREGATES", raising=False)
    stage = native_stage(SHARED, CALLS)
    assert stage is not None
    holder = pa.array([[b"s", b"a", None], None], pa.list_(pa.binary()))
    table = pa.table(
        {
            "g": [1, 2],
            "_col_1": holder,
            "_col_2": pa.array([None, None], pa.binary()),
            "_col_3": pa.array([None, None], pa.binary()),
            "_col_4": pa.array([[b"m"], [b"n"]], pa.list_(pa.binary())),
            "_col_5": [3, 0],
        }
    )
    spread = stage.spread(table)
    assert spread.column("_col_1").to_pylist() == [b"s", None]
    assert spread.column("_col_2").to_pylist() == [b"a", None]
    assert spread.column("_col_3").to_pylist() == [None, None]
    assert spread.column("_col_4").to_pylist() == [[b"m"], [b"n"]]


@pytest.mark.parametrize(
    "sql",
    [
        # A UNION ALL: each branch keeps its lists.
        "SELECT LIST(t.y) AS a FROM t AS t UNION ALL SELECT LIST(t.y) AS a FROM t AS t",
        # An item without an alias: its output name would change.
        "SELECT LIST(t.y) FROM t AS t",
    ],
)
def test_other_shapes_keep_lists(sql: str) -> None:
    assert native_stage(sql, [AggregateCall(0, 1, 4, SUM, decimal_scale=2)]) is None


def test_the_switch_keeps_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVESQL_NATIVE_AGGREGATES", "0")
    assert native_stage(SHARED, CALLS) is None

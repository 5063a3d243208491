"""Stage zero of an enclave plan run on plaintext DuckDB, for the SQL-layer tests: each stage's
read, with a column's own values standing in for the enclave's group ids (equal values, equal
ids, ascending alike), registered under the stage's view name. It must NOT run the plan's later
stages, nor stand in for the enclave anywhere else: the real enclave runs in tests/sql/*.test."""

from __future__ import annotations

import duckdb

from engine.sql.plan import Plan
from engine.sql.rewrite_enclave_joins import GROUP_ID
from tests.sql.fixtures.catalog import plaintext_db


def run_stage_zero(plan: Plan) -> duckdb.DuckDBPyConnection:
    """A plaintext database (tests.sql.fixtures.catalog) with the plan's stage-zero views of
    equi-join sides and of grouping below the outermost SELECT, values in place of ids."""
    connection = plaintext_db()
    for stage in plan.join_stages:
        for sql, view, column in (
            (stage.left_sql, stage.left_view, stage.left_column),
            (stage.right_sql, stage.right_view, stage.right_column),
        ):
            rows = connection.sql(sql).to_arrow_table()
            connection.register(view, rows.append_column(GROUP_ID, rows.column(column)))
    for group_stage in plan.group_stages:
        rows = connection.sql(group_stage.sql).to_arrow_table()
        for column, id_column in zip(group_stage.columns, group_stage.id_columns, strict=True):
            rows = rows.append_column(id_column, rows.column(column))
        connection.register(group_stage.view, rows)
    return connection

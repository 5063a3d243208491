"""TPC-H at SF 0.01 with l_quantity, l_extendedprice, l_discount and l_shipdate RANDOMIZED
(enclave-enabled) and l_returnflag, l_linestatus DETERMINISTIC: the Q1 and Q6 aggregates and a
join give exactly the plaintext answers (AVG, a DOUBLE, within a relative 1e-12, because the
enclave and DuckDB may add in another order).

Q1 and Q6 as published multiply inside SUM (``l_extendedprice * (1 - l_discount)``), which the
enclave cannot compute; those forms are refused before anything runs and the rest is checked.
The data is generated with tpchgen-cli once per session; without it the module is skipped.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import engine
from engine.client.enclave_session import InsecureEnclaveWarning
from engine.client.keystores import build_registry
from engine.connection import Connection
from engine.errors import NotSupportedError

RND = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_e, ENCRYPTION_TYPE = RANDOMIZED, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
DET = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_e, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
LINEITEM = f"""CREATE TABLE lineitem (
    l_orderkey BIGINT, l_linenumber INTEGER,
    l_quantity DECIMAL(15,2) {RND}, l_extendedprice DECIMAL(15,2) {RND},
    l_discount DECIMAL(15,2) {RND}, l_shipdate DATE {RND},
    l_returnflag VARCHAR {DET}, l_linestatus VARCHAR {DET})"""
ORDERS = "CREATE TABLE orders (o_orderkey BIGINT, o_orderpriority VARCHAR)"
COLUMNS = (
    "l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_discount, l_shipdate, "
    "l_returnflag, l_linestatus"
)

Q1 = """SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty,
    SUM(l_extendedprice) AS sum_base_price, AVG(l_quantity) AS avg_qty,
    AVG(l_extendedprice) AS avg_price, AVG(l_discount) AS avg_disc, COUNT(*) AS count_order
FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus"""
Q6 = """SELECT SUM(l_extendedprice) AS revenue_base, COUNT(*) AS n, MIN(l_discount), MAX(l_quantity)
FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
    AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"""
JOIN = """SELECT o.o_orderpriority, COUNT(*) AS n, SUM(l.l_quantity) AS qty,
    MAX(l.l_shipdate) AS last_ship, COUNT(DISTINCT l.l_discount) AS discounts
FROM orders AS o JOIN lineitem AS l ON l.l_orderkey = o.o_orderkey
WHERE l.l_shipdate > ? AND l.l_discount < ? GROUP BY o.o_orderpriority
ORDER BY o.o_orderpriority"""


def _tpchgen() -> str | None:
    beside = Path(sys.executable).with_name("tpchgen-cli")
    return str(beside) if beside.exists() else shutil.which("tpchgen-cli")


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool = _tpchgen()
    if tool is None:
        pytest.skip("tpchgen-cli is not installed (pip install -e '.[bench]')")
    folder = tmp_path_factory.mktemp("tpch")
    subprocess.run(
        [
            tool,
            "parquet",
            "--scale-factor=0.01",
            "--tables=lineitem,orders",
            f"--output-dir={folder}",
        ],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture(scope="module")
def databases(
    parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Connection, duckdb.DuckDBPyConnection]]:
    work = tmp_path_factory.mktemp("tpch_db")
    build_registry(key_directory=work).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVESQL_PLATFORM_DIR", str(work / "platform"))
        ours = engine.connect(
            str(work / "tpch.duckdb"), key_dir=str(work), attestation_protocol="none"
        )
        oracle = duckdb.connect()
        for statement in (
            "CREATE COLUMN MASTER KEY cmk_e WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)",
            "CREATE COLUMN ENCRYPTION KEY cek_e WITH VALUES (COLUMN_MASTER_KEY = cmk_e, "
            "ALGORITHM = 'RSA_OAEP')",
            LINEITEM,
            ORDERS,
        ):
            ours.execute(statement)
        lineitem = f"read_parquet('{parquet / 'lineitem.parquet'}')"
        orders = f"read_parquet('{parquet / 'orders.parquet'}')"
        oracle.execute(f"CREATE TABLE lineitem AS SELECT {COLUMNS} FROM {lineitem}")
        oracle.execute(f"CREATE TABLE orders AS SELECT o_orderkey, o_orderpriority FROM {orders}")
        ours.bulk_insert("lineitem", oracle.sql("SELECT * FROM lineitem").to_arrow_table())
        ours.bulk_insert("orders", oracle.sql("SELECT * FROM orders").to_arrow_table())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureEnclaveWarning)
            yield ours, oracle
        ours.close()
        oracle.close()


def _same(ours: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> None:
    assert len(ours) == len(theirs) and ours
    for mine, oracle in zip(ours, theirs, strict=True):
        for a, b in zip(mine, oracle, strict=True):
            if isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-12), (mine, oracle)
            else:
                assert a == b, (mine, oracle)


def test_q1_aggregates_match(databases: tuple[Connection, duckdb.DuckDBPyConnection]) -> None:
    ours, oracle = databases
    mine = sorted(ours.execute(Q1).fetchall(), key=repr)
    theirs = sorted(oracle.execute(Q1).fetchall(), key=repr)
    _same(mine, theirs)
    assert len(mine) == 4  # (A,F), (N,F), (N,O), (R,F)


def test_q6_filters_and_sum_match(databases: tuple[Connection, duckdb.DuckDBPyConnection]) -> None:
    ours, oracle = databases
    _same(ours.execute(Q6).fetchall(), oracle.execute(Q6).fetchall())


def test_join_with_enclave_predicates_matches(
    databases: tuple[Connection, duckdb.DuckDBPyConnection],
) -> None:
    import datetime
    import decimal

    ours, oracle = databases
    params = [datetime.date(1996, 6, 1), decimal.Decimal("0.04")]
    _same(ours.execute(JOIN, params).fetchall(), oracle.execute(JOIN, params).fetchall())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SUM(l_extendedprice * (1 - l_discount)) FROM lineitem",
        "SELECT SUM(l_extendedprice * l_discount) AS revenue FROM lineitem WHERE l_quantity < 24",
    ],
)
def test_arithmetic_inside_aggregates_is_refused(
    databases: tuple[Connection, duckdb.DuckDBPyConnection], sql: str
) -> None:
    ours, _ = databases
    with pytest.raises(NotSupportedError, match=r"arithmetic \(\*\)"):
        ours.execute(sql)

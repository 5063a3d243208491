"""UUID columns fed from DuckDB exports: bulk_insert of DuckDB's Arrow (text UUIDs by default,
``arrow.uuid`` with arrow_lossless_conversion) and of its pandas frame (uuid.UUID objects with
pd.NA for NULL), and executemany of the frame's rows, into encrypted (DETERMINISTIC and
RANDOMIZED, UUID and UNIQUEIDENTIFIER) and plaintext UUID columns read back as the oracle has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import engine
from engine.client.keystores import build_registry
from engine.errors import DataError
from engine.normalization import normalize

SOURCE = """SELECT range AS id, uuid() AS u,
    CASE WHEN range % 3 = 0 THEN NULL ELSE uuid() END AS g,
    CASE WHEN range % 4 = 1 THEN NULL ELSE uuid() END AS p
FROM range(40)"""


def _encrypted(kind: str) -> str:
    return (
        f"ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = {kind}, "
        "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
    )


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    source = duckdb.connect()
    source.execute(f"CREATE TABLE s AS {SOURCE}")
    yield source
    source.close()


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engine.Connection]:
    work = tmp_path_factory.mktemp("uuid_bulk")
    build_registry(key_directory=work).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    connection = engine.connect(str(work / "u.duckdb"), key_dir=str(work))
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem')"
    )
    connection.execute(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    for kind in ("DETERMINISTIC", "RANDOMIZED"):
        connection.execute(
            f"CREATE TABLE t_{kind.lower()} (id BIGINT, u UUID {_encrypted(kind)}, "
            f"g UNIQUEIDENTIFIER {_encrypted(kind)}, p UUID)"
        )
    yield connection
    connection.close()


def _export(oracle: duckdb.DuckDBPyConnection, form: str) -> Any:
    oracle.execute(f"SET arrow_lossless_conversion = {str(form == 'lossless').lower()}")
    relation = oracle.sql("SELECT * FROM s")
    if form == "pandas":
        return relation.df()
    return relation.arrow().read_all()


@pytest.mark.parametrize("kind", ["deterministic", "randomized"])
@pytest.mark.parametrize("form", ["text", "lossless", "pandas", "executemany"])
def test_duckdb_export_round_trips(
    con: engine.Connection, oracle: duckdb.DuckDBPyConnection, kind: str, form: str
) -> None:
    table = f"t_{kind}"
    con.execute(f"DELETE FROM {table}")
    data = _export(oracle, "pandas" if form == "executemany" else form)
    if form == "text":
        assert pa.types.is_string(data.schema.field("u").type)  # what this test is about
    if form == "lossless":
        assert data.schema.field("u").type == pa.uuid()
    if form == "executemany":
        rows = list(data.itertuples(index=False))
        con.cursor().executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)
    else:
        assert con.bulk_insert(table, data) == 40
    ours = con.execute(f"SELECT id, u, g, p FROM {table} ORDER BY id").fetchall()
    theirs = oracle.execute("SELECT id, u, g, p FROM s ORDER BY id").fetchall()
    assert ours == theirs
    assert any(row[2] is None for row in ours) and any(row[3] is None for row in ours)
    # The cells are usable, not only readable: an equality lookup on the deterministic column.
    if kind == "deterministic":
        wanted = theirs[5][1]
        assert con.execute(f"SELECT id FROM {table} WHERE u = ?", [wanted]).fetchall() == [(5,)]


def test_text_uuids_normalize_like_uuid_objects(oracle: duckdb.DuckDBPyConnection) -> None:
    oracle.execute("SET arrow_lossless_conversion = false")
    text = oracle.sql("SELECT g FROM s ORDER BY id").arrow().read_all().column("g")
    objects = [row[0] for row in oracle.execute("SELECT g FROM s ORDER BY id").fetchall()]
    assert normalize(text, "UNIQUEIDENTIFIER") == normalize(objects, "UNIQUEIDENTIFIER")
    large = text.cast(pa.large_string())
    assert normalize(large, "UUID") == normalize(objects, "UUID")


def test_text_that_is_not_a_uuid_is_refused_without_the_value() -> None:
    with pytest.raises(DataError, match="not a UUID") as caught:
        normalize(pa.array(["secret-not-a-uuid"]), "UUID", column="t.u")
    assert "secret" not in str(caught.value)

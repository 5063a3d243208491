"""pandas on an EnclaveSQL connection: read_sql with parameters against an encrypted column,
fetchdf, and bulk_insert from a DataFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import engine
from engine.client.keystores import build_registry

# pandas warns for every DB-API connection that is not sqlite3; that warning, and only it, is
# expected here (pytest turns warnings into errors).
pytestmark = pytest.mark.filterwarnings(
    "ignore:pandas only supports SQLAlchemy connectable:UserWarning"
)


@pytest.fixture()
def con(tmp_path: Path) -> engine.Connection:
    build_registry(key_directory=tmp_path).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    connection = engine.connect(str(tmp_path / "pd.duckdb"), key_dir=str(tmp_path))
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk.pem')"
    )
    connection.execute(
        "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    connection.execute(
        "CREATE TABLE patients (id INT, name VARCHAR, ssn CHAR(11) ENCRYPTED WITH ("
        "COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = DETERMINISTIC, "
        "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
    )
    yield connection
    connection.close()


def test_bulk_insert_from_a_dataframe_and_read_sql_with_params(con: engine.Connection) -> None:
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "name": ["Ada", "Bob", None], "ssn": ["111", "222", None]}
    )
    assert con.bulk_insert("patients", frame) == 3
    found = pd.read_sql("SELECT id, name FROM patients WHERE ssn = ?", con, params=["222"])
    assert found.to_dict("records") == [{"id": 2, "name": "Bob"}]
    everything = pd.read_sql("SELECT * FROM patients ORDER BY id", con)
    assert list(everything.columns) == ["id", "name", "ssn"]
    assert everything["ssn"].tolist()[:2] == ["111", "222"]
    assert everything["ssn"].isna().tolist() == [False, False, True]


def test_fetchdf_decrypts(con: engine.Connection) -> None:
    con.execute("INSERT INTO patients VALUES (1, 'Ada', '123-45-6789')")
    frame = con.execute("SELECT ssn FROM patients").fetchdf()
    assert frame["ssn"].tolist() == ["123-45-6789"]

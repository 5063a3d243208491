"""Plaintext to encrypted in the (simulated) enclave: the host normalizes the plaintext column
and the enclave encrypts it under a client-authorized query. Round trips on every supported
type against a plaintext DuckDB oracle, the path reported, no client codec on this path, and the
refusals and failures that must leave the table and the catalog unchanged."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import errors
from engine.client import codec as client_codec
from engine.client import rotation as client_rotation
from engine.host.enclave_gateway import native_enclave_available
from engine.rotation import EnclaveContext
from tests.support.enclave_context import development_enclave
from tests.support.keys import make_pem_keys
from tests.unit.test_alter_column import ENC, TYPES

pytestmark = pytest.mark.skipif(
    not native_enclave_available(), reason="the native enclave is not built (make -C native)"
)

ROWS = 300


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("alter-enclave-keys")
    return make_pem_keys(directory, "e.pem", "plain.pem", "forged.pem")


def _keys(con: engine.Connection) -> None:
    con.execute(
        "CREATE COLUMN MASTER KEY cmk_e WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'e.pem', ENCLAVE_COMPUTATIONS)"
    )
    con.execute(
        "CREATE COLUMN MASTER KEY cmk_plain WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'plain.pem')"
    )
    # A signature of the right size that forged.pem never made: it must not verify.
    con.execute(
        "CREATE COLUMN MASTER KEY cmk_forged WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        f"KEY_PATH = 'forged.pem', ENCLAVE_COMPUTATIONS (SIGNATURE = 0x{'5A' * 256}))"
    )
    for cek, cmk in (("cek_e", "cmk_e"), ("cek_plain", "cmk_plain"), ("cek_forged", "cmk_forged")):
        con.execute(
            f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = {cmk}, "
            "ALGORITHM = 'RSA_OAEP')"
        )


@pytest.fixture()
def con(tmp_path: Path, key_dir: Path) -> Iterator[engine.Connection]:
    connection = engine.connect(str(tmp_path / "enc.duckdb"), key_dir=str(key_dir))
    _keys(connection)
    yield connection
    connection.close()


@pytest.fixture()
def enclave(tmp_path: Path) -> Iterator[EnclaveContext]:
    with development_enclave(tmp_path / "platform") as context:
        yield context


def _fill(con: engine.Connection, plain_type: str, expression: str) -> None:
    """Table t (id, v) and its plaintext twin oracle, with NULLs in every 7th row."""
    value = f"CASE WHEN i % 7 = 3 THEN NULL ELSE {expression} END"
    for table in ("t", "oracle"):
        con.execute(f"CREATE TABLE {table} (id INTEGER, v {plain_type})")
        numbers = f"(SELECT range::INTEGER AS i FROM range({ROWS}))"
        con.execute(f"INSERT INTO {table} SELECT i, {value} FROM {numbers}")


def _values(con: engine.Connection, table: str = "t") -> list[tuple[object, ...]]:
    return con.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()


def _stored(con: engine.Connection) -> tuple[str, list[tuple[object, ...]]]:
    """The stored DuckDB type of t.v and its raw stored values, read past the engine."""
    raw = con._host._con  # type: ignore[attr-defined]
    stored_type = raw.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 't' AND column_name = 'v'"
    ).fetchone()[0]
    return stored_type, raw.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def _encryption(con: engine.Connection) -> tuple[str, str] | None:
    encryption = con._current_snapshot().column("t", "v").encryption
    return None if encryption is None else (encryption.cek_name, encryption.encryption_type)


def _alter(declared: str, cek: str = "cek_e", kind: str = "DETERMINISTIC") -> str:
    return f"ALTER TABLE t ALTER COLUMN v {declared} {ENC.format(cek, kind)}"


class _NoClientCodec:
    """Stands in for the client's codec functions: any use fails the test."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the client codec ran on the enclave path")


def _forbid_client_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (client_rotation, client_codec):
        monkeypatch.setattr(module, "encrypt_column", _NoClientCodec())
        monkeypatch.setattr(module, "decrypt_column", _NoClientCodec())


@pytest.mark.parametrize(
    ("plain_type", "declared", "expression", "kind"),
    [
        (*row, "DETERMINISTIC" if index % 2 == 0 else "RANDOMIZED")
        for index, row in enumerate(TYPES)
    ],
    ids=[row[1] for row in TYPES],
)
def test_round_trip_every_type_in_the_enclave(
    con: engine.Connection,
    enclave: EnclaveContext,
    monkeypatch: pytest.MonkeyPatch,
    plain_type: str,
    declared: str,
    expression: str,
    kind: str,
) -> None:
    _fill(con, plain_type, expression)
    oracle = _values(con, "oracle")
    assert len(oracle) == ROWS and any(v is None for _, v in oracle)

    _forbid_client_codec(monkeypatch)
    result = con.alter_column_encryption(
        _alter(declared, kind=kind), enclave=enclave, batch_rows=128, progress=False
    )
    monkeypatch.undo()
    assert (result.kind, result.path, result.rows) == ("encrypt", "enclave", ROWS)
    assert str(result).endswith("in the enclave")
    assert _encryption(con) == ("cek_e", kind)
    stored_type, stored = _stored(con)
    assert stored_type == "BLOB"
    # NULLs stay NULL in storage; every other value became a cell.
    assert [v is None for _, v in stored] == [v is None for _, v in oracle]
    assert _values(con) == oracle


_tables = itertools.count()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=40),
    kind=st.sampled_from(["DETERMINISTIC", "RANDOMIZED"]),
    batch_rows=st.integers(1, 16),
)
def test_any_text_column_keeps_its_values(
    con: engine.Connection,
    enclave: EnclaveContext,
    values: list[str | None],
    kind: str,
    batch_rows: int,
) -> None:
    table = f"h{next(_tables)}"
    con.execute(f"CREATE TABLE {table} (id INTEGER, v VARCHAR)")
    if values:
        con.execute(
            f"INSERT INTO {table} SELECT * FROM (VALUES "
            + ", ".join(["(?, ?)"] * len(values))
            + ")",
            [item for pair in enumerate(values) for item in pair],
        )
    result = con.alter_column_encryption(
        f"ALTER TABLE {table} ALTER COLUMN v NVARCHAR(12) {ENC.format('cek_e', kind)}",
        enclave=enclave,
        batch_rows=batch_rows,
        progress=False,
    )
    assert (result.path, result.rows) == ("enclave", len(values))
    rows = con.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()
    assert rows == list(enumerate(values))


def test_deterministic_cells_from_the_enclave_equal_the_client_codec(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    """The two paths are interchangeable: the same key and value give the same cell."""
    _fill(con, "VARCHAR", "'v' || i || ' Grüße'")
    con.alter_column_encryption(_alter("NVARCHAR(40)"), enclave=enclave, progress=False)
    plaintext = [v for _, v in _values(con, "oracle")]
    key = con._client.key_lookup(con._current_snapshot())("cek_e")
    expected = client_codec.encrypt_column(plaintext, key, "DETERMINISTIC", "NVARCHAR(40)")
    assert [v for _, v in _stored(con)[1]] == expected.to_pylist()


def test_the_host_hands_in_normalized_plaintext_and_gets_back_cells(
    con: engine.Connection, enclave: EnclaveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(con, "VARCHAR", "'secret-' || i")
    seen: list[tuple[pa.Array, pa.Array]] = []
    original = enclave.gateway.encrypt

    def recording(*args: Any) -> Any:
        result = original(*args)
        seen.append((args[-1], result))
        return result

    monkeypatch.setattr(enclave.gateway, "encrypt", recording)
    con.alter_column_encryption(
        _alter("VARCHAR(20)", kind="RANDOMIZED"), enclave=enclave, batch_rows=100, progress=False
    )
    assert len(seen) == 3 and sum(len(plain) for plain, _ in seen) == ROWS
    for plaintexts, cells in seen:
        assert plaintexts.null_count == cells.null_count and pa.types.is_binary(cells.type)
        # The column was plaintext: the host already held these bytes (docs/rotation.md).
        assert any(p is not None and p.startswith(b"secret-") for p in plaintexts.to_pylist())
        assert all(b"secret-" not in c for c in cells.to_pylist() if c is not None)


def test_path_enclave_refuses_a_key_that_is_not_enclave_enabled(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    _fill(con, "INTEGER", "i")
    version, before = con._host.catalog_version(), _stored(con)
    with pytest.raises(errors.ProgrammingError, match="cek_plain is not enclave-enabled"):
        con.alter_column_encryption(_alter("INT", cek="cek_plain"), enclave=enclave, path="enclave")
    assert con._host.catalog_version() == version and _encryption(con) is None
    assert _stored(con) == before
    # auto falls back to the client for that key and says so.
    result = con.alter_column_encryption(_alter("INT", cek="cek_plain"), enclave=enclave)
    assert result.path == "client" and _values(con) == _values(con, "oracle")


def test_path_enclave_without_a_session_and_path_client_with_one(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    _fill(con, "BIGINT", "i * 3")
    version = con._host.catalog_version()
    with pytest.raises(errors.OperationalError, match="no enclave session"):
        con.alter_column_encryption(_alter("BIGINT"), path="enclave")
    assert con._host.catalog_version() == version and _encryption(con) is None
    assert con.alter_column_encryption(_alter("BIGINT"), path="client", enclave=enclave).path == (
        "client"
    )
    assert _values(con) == _values(con, "oracle")


@pytest.mark.parametrize("path", ["enclave", "auto"])
def test_a_cmk_whose_signature_does_not_verify_is_refused(
    con: engine.Connection, enclave: EnclaveContext, path: str
) -> None:
    _fill(con, "INTEGER", "i")
    version, before = con._host.catalog_version(), _stored(con)
    with pytest.raises(errors.CellAuthenticationError):
        con.alter_column_encryption(
            _alter("INT", cek="cek_forged"),
            enclave=enclave,
            path=path,  # type: ignore[arg-type]
        )
    assert con._host.catalog_version() == version and _stored(con) == before


def test_a_failure_in_a_later_batch_rolls_everything_back(
    con: engine.Connection, enclave: EnclaveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(con, "DOUBLE", "i / 4")
    version, before = con._host.catalog_version(), _stored(con)
    original = enclave.gateway.encrypt
    calls: list[int] = []

    def failing_second_time(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise errors.OperationalError("the enclave went away")
        return original(*args)

    monkeypatch.setattr(enclave.gateway, "encrypt", failing_second_time)
    with pytest.raises(errors.OperationalError, match="went away"):
        con.alter_column_encryption(
            _alter("DOUBLE"), enclave=enclave, batch_rows=100, progress=False
        )
    monkeypatch.undo()
    assert con._host.catalog_version() == version and _encryption(con) is None
    assert _stored(con) == before
    # The query context ended with the failure; a fresh package still works afterwards.
    assert con.alter_column_encryption(_alter("DOUBLE"), enclave=enclave).path == "enclave"
    assert _values(con) == _values(con, "oracle")


@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_a_connection_with_attestation_encrypts_in_its_own_enclave(
    tmp_path: Path, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.connect(
        str(tmp_path / "own.duckdb"), key_dir=str(key_dir), attestation_protocol="none"
    ) as con:
        _keys(con)
        _fill(con, "VARCHAR", "'n' || i")
        with caplog.at_level("INFO", logger="enclavesql.rotation"):
            cursor = con.execute(_alter("VARCHAR(10)", kind="RANDOMIZED"))
        assert cursor.rowcount == ROWS
        assert caplog.messages == [f"encrypt t.v: {ROWS} row(s), in the enclave"]
        assert _encryption(con) == ("cek_e", "RANDOMIZED")
        assert _values(con) == _values(con, "oracle")

"""The enclave path of CEK rotation and ALTER COLUMN: re-encryption inside the (simulated)
enclave, without the client codec and without plaintext at the host; the refusals for keys
whose CMK signature does not verify; and the automatic choice of path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import engine
from engine import errors
from engine.client import rotation as client_rotation
from engine.client.codec import decrypt_column
from engine.host.enclave_gateway import native_enclave_available
from engine.rotation import EnclaveContext, rotate_cek
from tests.support.enclave_context import development_enclave
from tests.support.keys import make_pem_keys

pytestmark = pytest.mark.skipif(
    not native_enclave_available(), reason="the native enclave is not built (make -C native)"
)

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = 5000


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("enclave-rotation-keys")
    return make_pem_keys(directory, "e1.pem", "e2.pem", "plain.pem")


@pytest.fixture()
def con(tmp_path: Path, key_dir: Path) -> Iterator[engine.Connection]:
    connection = engine.connect(str(tmp_path / "e.duckdb"), key_dir=str(key_dir))
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk_e WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'e1.pem', ENCLAVE_COMPUTATIONS)"
    )
    # A signature of the right size that was never made by e2.pem: it must not verify.
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk_forged WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        f"KEY_PATH = 'e2.pem', ENCLAVE_COMPUTATIONS (SIGNATURE = 0x{'5A' * 256}))"
    )
    connection.execute(
        "CREATE COLUMN MASTER KEY cmk_plain WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'plain.pem')"
    )
    for cek, cmk in (
        ("cek_a", "cmk_e"),
        ("cek_b", "cmk_e"),
        ("cek_forged", "cmk_forged"),
        ("cek_plain", "cmk_plain"),
    ):
        connection.execute(
            f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = {cmk}, "
            "ALGORITHM = 'RSA_OAEP')"
        )
    connection.execute(
        f"CREATE TABLE t (id INTEGER, v VARCHAR(30) {ENC.format('cek_a', 'DETERMINISTIC')})"
    )
    connection.bulk_insert(
        "t",
        [(i, None if i % 9 == 4 else f"value {i} ü") for i in range(ROWS)],
        progress=False,
    )
    yield connection
    connection.close()


@pytest.fixture()
def enclave(tmp_path: Path) -> Iterator[EnclaveContext]:
    with development_enclave(tmp_path / "platform") as context:
        yield context


def _expected() -> list[tuple[int, str | None]]:
    return [(i, None if i % 9 == 4 else f"value {i} ü") for i in range(ROWS)]


def _encryption(con: engine.Connection) -> tuple[str, str]:
    encryption = con._current_snapshot().column("t", "v").encryption
    assert encryption is not None
    return encryption.cek_name, encryption.encryption_type


class _NoClientCodec:
    """Makes the client-streaming transform fail if it is used at all."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the client codec ran during an enclave re-encryption")


def test_rotation_in_the_enclave_never_uses_the_client_codec(
    con: engine.Connection, enclave: EnclaveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[pa.Array, pa.Array]] = []
    original = enclave.gateway.reencrypt

    def recording(*args: Any) -> Any:
        result = original(*args)
        seen.append((args[-1], result))
        return result

    monkeypatch.setattr(enclave.gateway, "reencrypt", recording)
    monkeypatch.setattr(client_rotation, "decrypt_column", _NoClientCodec())
    monkeypatch.setattr(client_rotation, "encrypt_column", _NoClientCodec())
    result = rotate_cek(
        con, "t", "v", "cek_b", encryption_type="RANDOMIZED", enclave=enclave, batch_rows=1500
    )
    monkeypatch.undo()
    assert (result.kind, result.path, result.rows) == ("reencrypt", "enclave", ROWS)
    assert "in the enclave" in str(result)
    assert _encryption(con) == ("cek_b", "RANDOMIZED")
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == _expected()
    # What the host handed in and got back were cells (the same NULLs), never plaintext.
    # Every row went through REENCRYPT once; a call never spans two of the four rowid ranges.
    assert len(seen) >= 4 and sum(len(cells) for cells, _ in seen) == ROWS
    key_b = con._client.key_lookup(con._current_snapshot())("cek_b")
    for cells, out in seen:
        assert cells.null_count == out.null_count and pa.types.is_binary(out.type)
        assert all(b"value" not in cell for cell in out.to_pylist() if cell is not None)
        assert all(b"value" not in cell for cell in cells.to_pylist() if cell is not None)
        assert decrypt_column(out, key_b, "VARCHAR(30)").null_count == cells.null_count


def test_auto_picks_the_enclave_and_sql_reports_the_same(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    sql = f"ALTER TABLE t ALTER COLUMN v VARCHAR(30) {ENC.format('cek_a', 'RANDOMIZED')}"
    assert con.alter_column_encryption(sql, enclave=enclave).path == "enclave"
    assert _encryption(con) == ("cek_a", "RANDOMIZED")
    # To a key that is not enclave-enabled, auto falls back to the client and says so.
    assert rotate_cek(con, "t", "v", "cek_plain", enclave=enclave).path == "client"
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == _expected()


@pytest.mark.parametrize("path", ["enclave", "auto"])
def test_a_cmk_whose_signature_does_not_verify_is_refused_and_nothing_changes(
    con: engine.Connection, enclave: EnclaveContext, path: str
) -> None:
    version = con._host.catalog_version()
    with pytest.raises(errors.CellAuthenticationError):
        rotate_cek(con, "t", "v", "cek_forged", path=path, enclave=enclave)  # type: ignore[arg-type]
    assert con._host.catalog_version() == version
    assert _encryption(con) == ("cek_a", "DETERMINISTIC")
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == _expected()


def test_the_enclave_path_refuses_a_key_that_is_not_enclave_enabled(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    with pytest.raises(errors.ProgrammingError, match="cek_plain is not enclave-enabled"):
        rotate_cek(con, "t", "v", "cek_plain", path="enclave", enclave=enclave)
    assert _encryption(con) == ("cek_a", "DETERMINISTIC")


@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_a_connection_with_attestation_uses_its_own_enclave_session(
    tmp_path: Path, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.connect(
        str(tmp_path / "own.duckdb"), key_dir=str(key_dir), attestation_protocol="none"
    ) as con:
        con.execute(
            "CREATE COLUMN MASTER KEY cmk_e WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'e1.pem', ENCLAVE_COMPUTATIONS)"
        )
        for cek in ("cek_a", "cek_b"):
            con.execute(
                f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = cmk_e, "
                "ALGORITHM = 'RSA_OAEP')"
            )
        con.execute(f"CREATE TABLE t (id INTEGER, v BIGINT {ENC.format('cek_a', 'RANDOMIZED')})")
        con.cursor().executemany("INSERT INTO t VALUES (?, ?)", [(i, i * 10**12) for i in range(9)])
        with caplog.at_level("INFO", logger="enclavesql.rotation"):
            cursor = con.execute(
                f"ALTER TABLE t ALTER COLUMN v BIGINT {ENC.format('cek_b', 'DETERMINISTIC')}"
            )
        assert cursor.rowcount == 9
        assert caplog.messages == ["reencrypt t.v: 9 row(s), in the enclave"]
        assert _encryption(con) == ("cek_b", "DETERMINISTIC")
        assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [
            (i, i * 10**12) for i in range(9)
        ]
        # path="client" still streams through the client on such a connection.
        assert rotate_cek(con, "t", "v", "cek_a", path="client").path == "client"


def test_a_change_of_stored_form_falls_back_to_the_client_or_is_refused(
    con: engine.Connection, enclave: EnclaveContext
) -> None:
    sql = f"ALTER TABLE t ALTER COLUMN v NVARCHAR(30) {ENC.format('cek_b', 'RANDOMIZED')}"
    with pytest.raises(errors.ProgrammingError, match="stored differently"):
        con.alter_column_encryption(sql, enclave=enclave, path="enclave")
    assert _encryption(con) == ("cek_a", "DETERMINISTIC")
    # UTF-8 to UTF-16LE needs the values re-normalized, which only the client does.
    assert con.alter_column_encryption(sql, enclave=enclave).path == "client"
    assert con._current_snapshot().column("t", "v").declared_type == "NVARCHAR(30)"
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == _expected()


@pytest.mark.parametrize("encryption_type", ["DETERMINISTIC", "RANDOMIZED"])
def test_the_host_cannot_encrypt_its_own_guesses_with_a_rotation_package(
    con: engine.Connection, enclave: EnclaveContext, encryption_type: str
) -> None:
    """A rotation's package lets the host move the column's cells to the target key, but not
    ENCRYPT a plaintext of its choice under it: for a DETERMINISTIC target that would be an
    oracle for equality with any guessed value."""
    from engine.client.normalization import normalize
    from engine.sql.alter_column_encryption import ColumnEncryptionChange
    from engine.sql.plan import EncryptionTarget

    snapshot = con._current_snapshot()
    source = EncryptionTarget("t", "v", "cek_a", "DETERMINISTIC", "VARCHAR(30)")
    target = EncryptionTarget("t", "v", "cek_b", encryption_type, "VARCHAR(30)")  # type: ignore[arg-type]
    change = ColumnEncryptionChange(
        "t", "v", source, "VARCHAR(30)", target, "VARCHAR(30)", "BLOB", None, (), snapshot.version
    )
    key_for = con._client.key_lookup(snapshot)
    job = client_rotation.enclave_reencryption(
        change, snapshot, enclave.session, con._client.resolver, key_for, "ALTER t.v"
    )
    session, gateway = enclave.session, enclave.gateway
    target_id = session.cek_id("cek_b")
    cells = con._host._con.sql("SELECT v FROM t WHERE id < 3").to_arrow_table().column(0)
    guess = normalize(["value 1 ü"], "VARCHAR(30)")
    with gateway.query(session.session_id, job.package, "ALTER t.v") as query:
        moved = gateway.reencrypt(query, job.source_cek_id, job.type_code, job.constant, cells)
        assert decrypt_column(moved, key_for("cek_b"), "VARCHAR(30)").to_pylist() == [
            "value 0 ü",
            "value 1 ü",
            "value 2 ü",
        ]
        for constant in (b"", b"\x01", b"\x02"):
            with pytest.raises(errors.OperationalError, match="did not authorize"):
                gateway.encrypt(query, target_id, job.type_code, constant, guess)

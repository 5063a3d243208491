"""CMK rotation: ALTER COLUMN ENCRYPTION KEY … ADD VALUE / DROP VALUE by hand, rotate_cmk (all
three steps in one transaction), the refusals, and the `enclavesql keys rotate-cmk` and
`rotate-cek` commands on a database file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine import errors
from engine.client.key_tool import main as keys_main
from engine.rotation import rotate_cmk
from tests.support.keys import make_pem_keys

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = [(i, f"secret {i}") for i in range(50)]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cmk-rotation-keys")
    return make_pem_keys(directory, "old.pem", "new.pem", "other.pem")


@pytest.fixture()
def database(tmp_path: Path, key_dir: Path) -> Path:
    path = tmp_path / "cmk.duckdb"
    with engine.connect(str(path), key_dir=str(key_dir)) as con:
        con.execute(
            "CREATE COLUMN MASTER KEY old_cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'old.pem')"
        )
        con.execute(
            "CREATE COLUMN MASTER KEY new_cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'new.pem', ENCLAVE_COMPUTATIONS)"
        )
        con.execute(
            "CREATE COLUMN MASTER KEY forged_cmk WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            f"KEY_PATH = 'other.pem', ENCLAVE_COMPUTATIONS (SIGNATURE = 0x{'5A' * 256}))"
        )
        for cek in ("cek1", "cek2"):
            con.execute(
                f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = old_cmk, "
                "ALGORITHM = 'RSA_OAEP')"
            )
        con.execute(
            f"CREATE TABLE t (id INTEGER, v VARCHAR {ENC.format('cek1', 'RANDOMIZED')}, "
            f"w VARCHAR {ENC.format('cek2', 'DETERMINISTIC')})"
        )
        con.cursor().executemany(
            "INSERT INTO t VALUES (?, ?, ?)", [(i, s, s.upper()) for i, s in ROWS]
        )
    return path


@pytest.fixture()
def con(database: Path, key_dir: Path) -> Iterator[engine.Connection]:
    connection = engine.connect(str(database), key_dir=str(key_dir))
    yield connection
    connection.close()


def _values_under(database: Path, key_dir: Path, trusted: set[str]) -> list[tuple[object, ...]]:
    """The table as read by a fresh client that may use only the ``trusted`` key paths."""
    with engine.connect(str(database), key_dir=str(key_dir), trusted_key_paths=trusted) as fresh:
        return fresh.execute("SELECT id, v, w FROM t ORDER BY id").fetchall()


def _cmks_of(con: engine.Connection, cek: str) -> list[str]:
    return [value.cmk_name for value in con._current_snapshot().cek(cek).values]


EXPECTED = [(i, s, s.upper()) for i, s in ROWS]


def test_add_value_then_drop_value_by_hand(
    con: engine.Connection, database: Path, key_dir: Path
) -> None:
    con.execute(
        "ALTER COLUMN ENCRYPTION KEY cek1 ADD VALUE (COLUMN_MASTER_KEY = new_cmk, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    assert _cmks_of(con, "cek1") == ["old_cmk", "new_cmk"]
    # While both values exist, a client with either CMK reads the column.
    with engine.connect(str(database), key_dir=str(key_dir), trusted_key_paths={"new.pem"}) as c:
        assert c.execute("SELECT id, v FROM t ORDER BY id").fetchall() == ROWS
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == ROWS
    con.execute("ALTER COLUMN ENCRYPTION KEY cek1 DROP VALUE (COLUMN_MASTER_KEY = old_cmk)")
    assert _cmks_of(con, "cek1") == ["new_cmk"]
    with (
        engine.connect(str(database), key_dir=str(key_dir), trusted_key_paths={"new.pem"}) as c,
        pytest.raises(errors.OperationalError, match="trusted_key_paths"),
    ):
        c.execute("SELECT id, w FROM t")  # cek2 is still under old_cmk only


def test_rotate_cmk_does_all_three_steps_atomically(
    con: engine.Connection, database: Path, key_dir: Path
) -> None:
    statements = rotate_cmk(con, "cek1", "new_cmk")
    assert [s.split()[5] for s in statements] == ["ADD", "DROP"]
    assert _cmks_of(con, "cek1") == ["new_cmk"] and _cmks_of(con, "cek2") == ["old_cmk"]
    rotate_cmk(con, "cek2", "new_cmk", drop_old=False)
    assert _cmks_of(con, "cek2") == ["old_cmk", "new_cmk"]
    con.close()
    assert _values_under(database, key_dir, {"new.pem"}) == EXPECTED


def test_rotating_to_a_cmk_whose_signature_does_not_verify_changes_nothing(
    con: engine.Connection,
) -> None:
    version = con._host.catalog_version()
    with pytest.raises(errors.CellAuthenticationError):
        rotate_cmk(con, "cek1", "forged_cmk")
    assert con._host.catalog_version() == version and _cmks_of(con, "cek1") == ["old_cmk"]


def test_refusals_of_rotate_cmk(con: engine.Connection) -> None:
    with pytest.raises(errors.ProgrammingError, match="already has a value under"):
        rotate_cmk(con, "cek1", "old_cmk")
    with pytest.raises(errors.ProgrammingError, match="unknown column master key"):
        rotate_cmk(con, "cek1", "nope")
    rotate_cmk(con, "cek1", "new_cmk", drop_old=False)
    with pytest.raises(errors.OperationalError, match="middle of a rotation"):
        rotate_cmk(con, "cek1", "forged_cmk")


def test_a_failed_step_rolls_back_the_added_value(
    con: engine.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import rotation

    def broken(*args: object) -> None:
        raise errors.OperationalError("the new value does not unwrap")

    monkeypatch.setattr(rotation, "_check_new_value", broken)
    with pytest.raises(errors.OperationalError, match="does not unwrap"):
        rotate_cmk(con, "cek1", "new_cmk")
    assert _cmks_of(con, "cek1") == ["old_cmk"]


def test_keys_rotate_cmk_command(
    database: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = keys_main(
        [
            "rotate-cmk",
            "--database",
            str(database),
            "--from-cmk",
            "old_cmk",
            "--to-cmk",
            "new_cmk",
            "--key-dir",
            str(key_dir),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("ADD VALUE") == 2 and out.count("DROP VALUE") == 2
    assert "0x" not in out  # no envelope or key bytes are printed
    assert _values_under(database, key_dir, {"new.pem"}) == EXPECTED


def test_keys_rotate_cmk_reports_a_refusal_as_one_line(
    database: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rotate-cmk", "--database", str(database), "--cek", "cek1", "--to-cmk", "forged_cmk"]
    assert keys_main([*argv, "--key-dir", str(key_dir)]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("enclavesql keys: MetadataSignatureError:") and err.count("\n") == 1


def test_keys_rotate_cek_command_says_which_path_ran(
    database: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rotate-cek", "--database", str(database), "--table", "t", "--column", "w"]
    code = keys_main([*argv, "--to", "cek1", "--key-dir", str(key_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == "reencrypt t.w: 50 row(s), by streaming through the client"
    with engine.connect(str(database), key_dir=str(key_dir)) as con:
        assert con._current_snapshot().column("t", "w").encryption.cek_name == "cek1"
        assert con.execute("SELECT id, v, w FROM t ORDER BY id").fetchall() == EXPECTED
    code = keys_main([*argv, "--to", "cek2", "--path", "enclave", "--key-dir", str(key_dir)])
    _, err = capsys.readouterr()
    assert code == 1 and "ProgrammingError" in err and "not enclave-enabled" in err


@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_keys_rotate_cek_in_the_enclave(
    database: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.host.enclave_gateway import native_enclave_available

    if not native_enclave_available():
        pytest.skip("the native enclave is not built (make -C native)")
    # Both keys must be enclave-enabled: move cek1 and cek2 to the enclave-enabled new_cmk.
    common = ["--database", str(database), "--key-dir", str(key_dir)]
    assert keys_main(["rotate-cmk", *common, "--from-cmk", "old_cmk", "--to-cmk", "new_cmk"]) == 0
    capsys.readouterr()
    argv = ["rotate-cek", *common, "--table", "t", "--column", "v", "--to", "cek2"]
    code = keys_main([*argv, "--path", "enclave", "--attestation-protocol", "none"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == "reencrypt t.v: 50 row(s), in the enclave"
    assert _values_under(database, key_dir, {"new.pem"}) == EXPECTED

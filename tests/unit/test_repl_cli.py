"""The `enclavesql` command line: options, `-c` and piped scripts with their exit codes.

Subprocesses run `python -m engine.cli` from the repository root, against engine.connect or, with
`--connect`, the plain-DuckDB stand-in from tests/support/repl_adapter.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.repl.app import history_path, should_submit
from engine.repl.options import connect_kwargs, open_connection, parse_options

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ["--connect", "tests.support.repl_adapter:connect"]
needs_engine = pytest.mark.skipif(
    not hasattr(engine, "connect"), reason="engine.connect is not written yet"
)


def enclavesql(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_connect_kwargs_follow_the_options() -> None:
    options = parse_options(
        [
            "db.duckdb",
            "--no-decrypt",
            "--attestation-protocol",
            "service",
            "--attestation-url",
            "http://127.0.0.1:1/attest",
            "--trusted-key-path",
            "a.pem",
            "--trusted-key-path",
            "b.pem",
        ]
    )
    assert options.database == "db.duckdb"
    assert connect_kwargs(options) == {
        "column_encryption": False,
        "attestation_protocol": "service",
        "attestation_url": "http://127.0.0.1:1/attest",
        "trusted_key_paths": ["a.pem", "b.pem"],
    }
    assert connect_kwargs(parse_options([])) == {"column_encryption": True}


def test_bad_option_values_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_options(["--max-rows", "0"])
    assert exit_info.value.code == 2


def test_open_connection_with_an_unloadable_function_says_so() -> None:
    with pytest.raises(engine.InterfaceError, match="MODULE:FUNCTION"):
        open_connection(parse_options(["--connect", "no_colon_here"]))
    with pytest.raises(engine.InterfaceError, match="cannot load the connect function"):
        open_connection(parse_options(["--connect", "tests.support.nothing:connect"]))


def test_history_path() -> None:
    assert history_path(environ={}) == Path.home() / ".enclavesql_history"
    assert history_path(environ={"XDG_STATE_HOME": "/s"}) == Path("/s/enclavesql/history")
    assert history_path("~/h", environ={"XDG_STATE_HOME": "/s"}) == Path.home() / "h"


@pytest.mark.parametrize(
    ("text", "submit"),
    [
        ("", True),
        (".tables", True),
        ("SELECT 1", False),
        ("SELECT ';'", False),
        ("SELECT 1;", True),
    ],
)
def test_enter_submits_only_complete_input(text: str, submit: bool) -> None:
    assert should_submit(text) is submit


@needs_engine
def test_command_success_exits_zero() -> None:
    done = enclavesql("-c", "SELECT 42 AS answer", "--mode", "csv")
    assert (done.returncode, done.stdout, done.stderr) == (0, "answer\n42\n", "")


@needs_engine
def test_command_error_exits_one_with_one_line() -> None:
    done = enclavesql("-c", "SELECT FROM WHERE")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error (ProgrammingError): syntax error at line 1, column ")


@needs_engine
def test_debug_shows_the_traceback() -> None:
    done = enclavesql("--debug", "-c", "SELECT FROM WHERE")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("Error (ProgrammingError)")


def test_piped_script_stops_at_the_first_error() -> None:
    script = "SELECT 1 AS one;\nSELECT * FROM nowhere;\nSELECT 2 AS two;\n"
    done = enclavesql(*ADAPTER, "--mode", "csv", stdin=script)
    assert done.returncode == 1
    assert done.stdout == "one\n1\n"
    assert done.stderr.startswith("Error (") and len(done.stderr.splitlines()) == 1


def test_piped_script_with_bail_off_runs_on_but_still_fails() -> None:
    script = "SELECT * FROM nowhere;\nSELECT 2 AS two;\n"
    done = enclavesql(*ADAPTER, "--mode", "csv", "--bail", "off", stdin=script)
    assert done.returncode == 1
    assert done.stdout == "two\n2\n"


def test_piped_script_success_exits_zero(tmp_path: Path) -> None:
    database = tmp_path / "t.duckdb"
    script = (
        "CREATE TABLE t (a INTEGER, b VARCHAR);\n"
        "INSERT INTO t VALUES (1, 'x;y'), (2, NULL);\n"
        ".mode json\n"
        "SELECT *\n  FROM t\n  ORDER BY a;\n"
    )
    done = enclavesql(str(database), *ADAPTER, stdin=script)
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'OK\n2 rows affected\n[{"a": 1, "b": "x;y"},\n{"a": 2, "b": null}]\n'


def test_version() -> None:
    done = enclavesql("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("enclavesql ")


def test_missing_connect_function_is_reported() -> None:
    done = enclavesql("--connect", "tests.support.nothing:connect", "-c", "SELECT 1")
    assert done.returncode == 1
    assert done.stderr.startswith("Error (InterfaceError): cannot load the connect function")


@pytest.fixture
def encrypted_database(tmp_path: Path) -> tuple[Path, Path]:
    """A database file with one deterministic column, its CMK in a PEM file under keys/."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = tmp_path / "keys"
    keys.mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "cmk1.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    database = tmp_path / "enc.duckdb"
    with engine.connect(str(database), key_dir=str(keys)) as connection:
        for statement in (
            "CREATE COLUMN MASTER KEY CMK1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            "KEY_PATH = 'cmk1.pem')",
            "CREATE COLUMN ENCRYPTION KEY CEK1 WITH VALUES (COLUMN_MASTER_KEY = CMK1, "
            "ALGORITHM = 'RSA_OAEP')",
            "CREATE TABLE patients (id INTEGER, ssn CHAR(11) ENCRYPTED WITH ("
            "COLUMN_ENCRYPTION_KEY = CEK1, ENCRYPTION_TYPE = DETERMINISTIC, "
            "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))",
            "INSERT INTO patients VALUES (1, '123-45-6789'), (2, NULL)",
        ):
            connection.execute(statement)
    return database, keys


@needs_engine
def test_encrypted_columns_are_decrypted_and_marked(encrypted_database: tuple[Path, Path]) -> None:
    database, keys = encrypted_database
    done = enclavesql(
        str(database), "--key-dir", str(keys), "-c", "SELECT * FROM patients ORDER BY id"
    )
    assert done.returncode == 0, done.stderr
    assert "│ id │ ssn*        │" in done.stdout
    assert "│  1 │ 123-45-6789 │" in done.stdout
    assert done.stdout.endswith("2 rows  (* encrypted column)\n")


@needs_engine
def test_no_decrypt_shows_ciphertext(encrypted_database: tuple[Path, Path]) -> None:
    database, _keys = encrypted_database
    done = enclavesql(str(database), "--no-decrypt", "-c", "SELECT ssn FROM patients ORDER BY id")
    assert done.returncode == 0, done.stderr
    assert "123-45-6789" not in done.stdout
    # A deterministic AEAD cell starts with version byte 0x01 and is far longer than 16 bytes.
    cell = done.stdout.splitlines()[3]
    assert cell.startswith("│ 0x01") and cell.endswith("… │")
    assert "NULL" in done.stdout.splitlines()[4]


@needs_engine
def test_schema_and_keys_read_the_engine_catalog(encrypted_database: tuple[Path, Path]) -> None:
    database, keys = encrypted_database
    done = enclavesql(str(database), "--key-dir", str(keys), stdin=".schema\n.keys\n")
    assert done.returncode == 0, done.stderr
    # The declared type is whatever the engine's catalog recorded for CHAR(11).
    assert re.search(
        r"\n    ssn \S+ ENCRYPTED WITH \(COLUMN_ENCRYPTION_KEY = CEK1, "
        r"ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'\)\n",
        done.stdout,
    )
    assert "│ CMK1 │ PEM_FILE │ cmk1.pem │" in done.stdout
    assert "BEGIN" not in done.stdout  # no PEM text, no envelope


@needs_engine
def test_import_goes_through_bulk_insert_and_encrypts(
    encrypted_database: tuple[Path, Path], tmp_path: Path
) -> None:
    database, keys = encrypted_database
    data = tmp_path / "more.csv"
    data.write_text("ssn,id\n555-00-1111,3\n", encoding="utf-8")
    script = (
        f".import {data} patients\n.mode csv\nSELECT id FROM patients WHERE ssn = '555-00-1111';\n"
    )
    done = enclavesql(str(database), "--key-dir", str(keys), stdin=script)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported 1 row into patients\nid\n3\n"
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("enc.duckdb*"))
    assert stored and b"555-00-1111" not in stored

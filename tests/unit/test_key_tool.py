"""`enclavesql keys`: the printed T-SQL, the key files, exit codes and error lines."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.client import key_tool
from engine.client.cek_envelope import parse_envelope
from engine.client.keystores import PemFileProvider, Pkcs11Provider, parse_pkcs11_uri
from engine.client.keystores.pkcs11_uri import PIN_ENV
from tests.support import softhsm

CMK_STATEMENT = re.compile(
    r"CREATE COLUMN MASTER KEY (?P<name>.+?)\nWITH \(\n"
    r"    KEY_STORE_PROVIDER_NAME = '(?P<provider>[^']+)',\n"
    r"    KEY_PATH = '(?P<path>(?:[^']|'')+)'"
    r"(?:,\n    ENCLAVE_COMPUTATIONS \(SIGNATURE = 0x(?P<signature>[0-9A-F]+)\))?\n\);\n\Z"
)
CEK_STATEMENT = re.compile(
    r"(?:CREATE COLUMN ENCRYPTION KEY (?P<name>\S+)\nWITH VALUES|"
    r"ALTER COLUMN ENCRYPTION KEY (?P<altered>\S+)\nADD VALUE) \(\n"
    r"    COLUMN_MASTER_KEY = (?P<cmk>\S+),\n"
    r"    ALGORITHM = 'RSA_OAEP',\n"
    r"    ENCRYPTED_VALUE = 0x(?P<value>[0-9A-F]+)\n\);\n\Z"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = key_tool.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_create_pem_cmk_with_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys,
        "create-cmk",
        "--name",
        "CMK1",
        "--provider",
        "PEM_FILE",
        "--key-path",
        "cmk1.pem",
        "--key-dir",
        str(tmp_path),
        "--enclave-computations",
    )
    assert (status, err) == (0, "")
    statement = CMK_STATEMENT.match(out)
    assert statement, out
    assert statement["name"] == "CMK1"
    assert (statement["provider"], statement["path"]) == ("PEM_FILE", "cmk1.pem")
    key_file = tmp_path / "cmk1.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    provider = PemFileProvider(tmp_path)
    assert provider.public_key("cmk1.pem").key_size == 3072
    provider.verify_cmk_metadata("cmk1.pem", True, bytes.fromhex(statement["signature"]))
    assert "PRIVATE KEY" not in out


@pytest.fixture
def pem_cmk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    status, _out, _err = run(
        capsys,
        "create-cmk",
        "--name",
        "CMK2",
        "--provider",
        "pem_file",
        "--key-path",
        "cmk2.pem",
        "--key-dir",
        str(tmp_path),
        "--key-size",
        "2048",
    )
    assert status == 0
    return tmp_path


def test_cmk_without_enclave_computations_has_no_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _err = run(
        capsys,
        "create-cmk",
        "--name",
        "my cmk",
        "--provider",
        "PEM_FILE",
        "--key-path",
        str(tmp_path / "it's.pem"),
        "--key-size",
        "2048",
    )
    assert status == 0
    statement = CMK_STATEMENT.match(out)
    assert statement and statement["signature"] is None
    assert statement["name"] == "[my cmk]"
    assert statement["path"].replace("''", "'") == str(tmp_path / "it's.pem")


def test_existing_key_file_is_not_overwritten_without_force(
    pem_cmk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (pem_cmk / "cmk2.pem").read_bytes()
    argv = ["create-cmk", "--name", "C", "--provider", "PEM_FILE", "--key-path", "cmk2.pem"]
    argv += ["--key-dir", str(pem_cmk), "--key-size", "2048"]
    status, out, err = run(capsys, *argv)
    assert status == 1 and out == ""
    assert err.startswith("enclavesql keys: OperationalError: ") and err.count("\n") == 1
    assert "--force" in err and "Traceback" not in err
    assert (pem_cmk / "cmk2.pem").read_bytes() == before
    assert run(capsys, *argv, "--force")[0] == 0
    assert (pem_cmk / "cmk2.pem").read_bytes() != before


def test_create_cek_prints_a_fresh_envelope(
    pem_cmk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["create-cek", "--name", "CEK1", "--cmk-name", "CMK2", "--provider", "PEM_FILE"]
    argv += ["--key-path", "cmk2.pem", "--key-dir", str(pem_cmk)]
    provider = PemFileProvider(pem_cmk)
    keys = []
    for _ in range(2):
        status, out, err = run(capsys, *argv)
        assert (status, err) == (0, "")
        statement = CEK_STATEMENT.match(out)
        assert statement, out
        assert (statement["name"], statement["cmk"]) == ("CEK1", "CMK2")
        envelope = bytes.fromhex(statement["value"])
        assert parse_envelope(envelope).key_path == "cmk2.pem"
        keys.append(provider.unwrap_cek("cmk2.pem", envelope))
    assert len(keys[0]) == 32 and keys[0] != keys[1]
    assert keys[0].hex().upper() not in out


def test_rewrap_moves_a_cek_to_a_new_cmk(pem_cmk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    provider = PemFileProvider(pem_cmk)
    provider.generate_key("new.pem", key_size=2048)
    cek = bytes(range(32))
    old = provider.wrap_cek("cmk2.pem", cek)
    status, out, err = run(
        capsys,
        "rewrap",
        "--name",
        "CEK1",
        "--encrypted-value",
        "0x" + old.hex(),
        "--old-provider",
        "PEM_FILE",
        "--old-key-path",
        "cmk2.pem",
        "--new-cmk-name",
        "CMK_NEW",
        "--new-provider",
        "PEM_FILE",
        "--new-key-path",
        "new.pem",
        "--key-dir",
        str(pem_cmk),
    )
    assert (status, err) == (0, "")
    statement = CEK_STATEMENT.match(out)
    assert statement and statement["altered"] == "CEK1" and statement["cmk"] == "CMK_NEW"
    assert provider.unwrap_cek("new.pem", bytes.fromhex(statement["value"])) == cek


def test_rewrap_of_a_tampered_value_fails_cleanly(
    pem_cmk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = bytearray(PemFileProvider(pem_cmk).wrap_cek("cmk2.pem", bytes(32)))
    old[-1] ^= 1
    status, out, err = run(
        capsys,
        "rewrap",
        "--name=CEK1",
        f"--encrypted-value=0x{old.hex()}",
        "--old-provider=PEM_FILE",
        "--old-key-path=cmk2.pem",
        "--new-cmk-name=CMK2",
        "--new-provider=PEM_FILE",
        "--new-key-path=cmk2.pem",
        f"--key-dir={pem_cmk}",
    )
    assert status == 1 and out == ""
    assert err.startswith("enclavesql keys: EnvelopeAuthenticationError: ")
    assert old.hex() not in err.lower()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["create-cmk"],
        ["create-cmk", "--name", "C", "--provider", "PEM_FILE"],
        ["no-such-command"],
        ["create-cmk", "--name", "C", "--provider", "P", "--key-path", "k", "--key-size", "big"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert "usage:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _err = run(capsys, "--help")
    assert status == 0 and "create-cmk" in out


def test_unknown_provider_is_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys,
        "create-cek",
        "--name",
        "K",
        "--cmk-name",
        "C",
        "--provider",
        "AKV",
        "--key-path",
        "x",
    )
    assert status == 1 and out == ""
    assert err.startswith("enclavesql keys: OperationalError: no key store provider named 'AKV'")


def test_cli_dispatches_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli_main(
        ["keys", "create-cmk", "--name", "C", "--provider", "PEM_FILE", "--key-path"]
        + [str(tmp_path / "c.pem"), "--key-size", "2048"]
    )
    assert status == 0
    assert CMK_STATEMENT.match(capsys.readouterr().out)


@pytest.mark.softhsm
def test_create_pkcs11_cmk_and_cek(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = softhsm.skip_reason()
    if reason:
        pytest.skip(reason)
    token = softhsm.shared_token()
    uri = token.uri(softhsm.fresh_label("tool"))
    status, out, err = run(
        capsys,
        "create-cmk",
        "--name",
        "HSM_CMK",
        "--provider",
        "PKCS11",
        "--key-path",
        uri,
        "--key-size",
        "2048",
        "--enclave-computations",
    )
    assert status == 0, err
    assert token.pin not in out and token.pin not in err
    assert "pin-value was removed" in err and "pin-source" in err
    statement = CMK_STATEMENT.match(out)
    assert statement, out
    stored_path = statement["path"]
    assert stored_path == parse_pkcs11_uri(uri).without_pin_value()
    # The printed KEY_PATH is usable once the PIN comes from elsewhere, and the signature
    # covers exactly that path.
    monkeypatch.setenv(PIN_ENV, token.pin)
    provider = Pkcs11Provider(allowed_modules=[token.module])
    provider.close()  # start from a logged-out token so the PIN really comes from the env
    provider.verify_cmk_metadata(stored_path, True, bytes.fromhex(statement["signature"]))

    status, out, err = run(
        capsys,
        "create-cek",
        "--name",
        "HSM_CEK",
        "--cmk-name",
        "HSM_CMK",
        "--provider",
        "PKCS11",
        "--key-path",
        stored_path,
    )
    assert (status, err) == (0, "")
    cek_statement = CEK_STATEMENT.match(out)
    assert cek_statement
    assert len(provider.unwrap_cek(stored_path, bytes.fromhex(cek_statement["value"]))) == 32

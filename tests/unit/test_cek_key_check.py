"""The CEK key check: its definition (against the standard library's HMAC), the resolver refusing
values whose check does not verify, and key DDL storing a check on every value it creates:
generated, pasted from ``enclavesql keys create-cek``, and added during CMK rotation.

Tampering with stored checks through the host is in tests/security/test_tampering.py.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import engine
from engine import errors
from engine.client import key_tool
from engine.client.column_keys import ColumnKeyResolver, cek_key_check, verify_cek_key_check
from engine.client.keystores import PemFileProvider, build_registry
from engine.rotation import rotate_cmk

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


def _expected_check(cek: bytes, name: str) -> bytes:
    """The documented definition (docs/keys.md), computed with the standard library."""
    message = b"EnclaveSQL CEK check v1\x00" + name.casefold().encode("utf-8")
    return hmac.new(cek, message, hashlib.sha256).digest()


keys_32 = st.binary(min_size=32, max_size=32)
names = st.text(min_size=1, max_size=20)


@given(cek=keys_32, name=names)
def test_the_check_matches_its_definition_and_verifies(cek: bytes, name: str) -> None:
    check = cek_key_check(cek, name)
    assert check == _expected_check(cek, name)
    verify_cek_key_check(cek, name.upper(), check)  # names compare case-insensitively


@given(cek=keys_32, other=keys_32, name=names, other_name=names)
def test_another_key_or_name_is_refused(
    cek: bytes, other: bytes, name: str, other_name: str
) -> None:
    check = cek_key_check(cek, name)
    if other != cek:
        with pytest.raises(errors.CellAuthenticationError):
            verify_cek_key_check(other, name, check)
    if other_name.casefold() != name.casefold():
        with pytest.raises(errors.CellAuthenticationError):
            verify_cek_key_check(cek, other_name, check)


@given(cek=keys_32, data=st.data())
def test_a_damaged_or_missing_check_is_refused(cek: bytes, data: st.DataObject) -> None:
    check = bytearray(cek_key_check(cek, "cek1"))
    index = data.draw(st.integers(0, len(check) - 1))
    check[index] ^= data.draw(st.integers(1, 255))
    for damaged in (bytes(check), cek_key_check(cek, "cek1")[:index], None):
        with pytest.raises(errors.CellAuthenticationError):
            verify_cek_key_check(cek, "cek1", damaged)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("key-check-keys")
    provider = build_registry(key_directory=directory).get("PEM_FILE")
    for name in ("old.pem", "new.pem"):
        provider.generate_key(name, key_size=2048)
    return directory


def test_the_resolver_skips_a_value_whose_check_fails(key_dir: Path) -> None:
    """During rotation one bad value does not hide the good one; with no good one it raises."""
    registry = build_registry(key_directory=key_dir)
    provider = registry.get("PEM_FILE")
    cek, wrong = bytes(range(32)), bytes(range(1, 33))
    good = ("PEM_FILE", "new.pem", provider.wrap_cek("new.pem", cek), _expected_check(cek, "k"))
    swapped = ("PEM_FILE", "old.pem", provider.wrap_cek("old.pem", wrong), good[3])
    unchecked = ("PEM_FILE", "old.pem", provider.wrap_cek("old.pem", cek), None)
    resolver = ColumnKeyResolver(registry)
    assert resolver.cek_for_checked("K", [swapped, good]) == cek
    assert resolver.cek_for_checked("K", [unchecked, good]) == cek
    for values in ([swapped], [unchecked], [swapped, unchecked]):
        with pytest.raises(errors.CellAuthenticationError):
            resolver.cek_for_checked("K", values)
        # The refusal is not cached: asking again refuses again.
        with pytest.raises(errors.CellAuthenticationError):
            resolver.cek_for_checked("K", values)
    with pytest.raises(errors.CellAuthenticationError):
        resolver.cek_for_checked("other", [good])


@pytest.fixture()
def con(tmp_path: Path, key_dir: Path) -> Iterator[engine.Connection]:
    connection = engine.connect(str(tmp_path / "check.duckdb"), key_dir=str(key_dir))
    for cmk, path in (("old_cmk", "old.pem"), ("new_cmk", "new.pem")):
        connection.execute(
            f"CREATE COLUMN MASTER KEY {cmk} WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            f"KEY_PATH = '{path}')"
        )
    yield connection
    connection.close()


def _stored(con: engine.Connection, cek: str) -> list[tuple[str, bytes, bytes | None]]:
    return [
        (value.cmk_name, value.encrypted_value or b"", value.key_check)
        for value in con._current_snapshot().cek(cek).values
    ]


def _assert_round_trip(con: engine.Connection, cek: str) -> None:
    con.execute(f"CREATE TABLE t_{cek} (id INTEGER, v VARCHAR {ENC.format(cek)})")
    con.execute(f"INSERT INTO t_{cek} VALUES (1, 'alpha'), (2, 'beta')")
    assert con.execute(f"SELECT id FROM t_{cek} WHERE v = ?", ["beta"]).fetchall() == [(2,)]
    assert con.execute(f"SELECT v FROM t_{cek} ORDER BY id").fetchall() == [("alpha",), ("beta",)]


def test_a_generated_cek_gets_its_check(con: engine.Connection, key_dir: Path) -> None:
    con.execute(
        "CREATE COLUMN ENCRYPTION KEY Gen WITH VALUES (COLUMN_MASTER_KEY = old_cmk, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    [(_cmk, envelope, check)] = _stored(con, "gen")
    cek = PemFileProvider(key_dir).unwrap_cek("old.pem", envelope)
    assert check == _expected_check(cek, "gen")
    _assert_round_trip(con, "gen")


def test_a_cek_from_keys_create_cek_gets_its_check(
    con: engine.Connection, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pasted ENCRYPTED_VALUE (here from `enclavesql keys create-cek`) is unwrapped on the
    client when the CEK is created, and its check stored with it."""
    status = key_tool.main(
        ["create-cek", "--name", "pasted", "--cmk-name", "old_cmk", "--provider", "PEM_FILE"]
        + ["--key-path", "old.pem", "--key-dir", str(key_dir)]
    )
    statement = capsys.readouterr().out
    assert status == 0 and "ENCRYPTED_VALUE = 0x" in statement
    con.execute(statement.rstrip().rstrip(";"))
    [(_cmk, envelope, check)] = _stored(con, "pasted")
    cek = PemFileProvider(key_dir).unwrap_cek("old.pem", envelope)
    assert check == _expected_check(cek, "pasted")
    _assert_round_trip(con, "pasted")


def test_cmk_rotation_puts_the_check_on_both_values(con: engine.Connection, key_dir: Path) -> None:
    con.execute(
        "CREATE COLUMN ENCRYPTION KEY rot WITH VALUES (COLUMN_MASTER_KEY = old_cmk, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    _assert_round_trip(con, "rot")
    rotate_cmk(con, "rot", "new_cmk", drop_old=False)
    (old_cmk, old, old_check), (new_cmk, new, new_check) = _stored(con, "rot")
    assert (old_cmk, new_cmk) == ("old_cmk", "new_cmk")
    provider = PemFileProvider(key_dir)
    cek = provider.unwrap_cek("old.pem", old)
    assert provider.unwrap_cek("new.pem", new) == cek
    assert old_check == new_check == _expected_check(cek, "rot")
    con.execute("ALTER COLUMN ENCRYPTION KEY rot DROP VALUE (COLUMN_MASTER_KEY = old_cmk)")
    assert con.execute("SELECT id FROM t_rot WHERE v = ?", ["alpha"]).fetchall() == [(1,)]


def test_adding_a_value_that_wraps_another_key_is_refused(
    con: engine.Connection, key_dir: Path
) -> None:
    con.execute(
        "CREATE COLUMN ENCRYPTION KEY one WITH VALUES (COLUMN_MASTER_KEY = old_cmk, "
        "ALGORITHM = 'RSA_OAEP')"
    )
    before = _stored(con, "one")
    other = PemFileProvider(key_dir).wrap_cek("new.pem", bytes(range(32)))
    with pytest.raises(errors.ProgrammingError, match="wraps another key"):
        con.execute(
            "ALTER COLUMN ENCRYPTION KEY one ADD VALUE (COLUMN_MASTER_KEY = new_cmk, "
            f"ALGORITHM = 'RSA_OAEP', ENCRYPTED_VALUE = 0x{other.hex()})"
        )
    assert _stored(con, "one") == before

"""The PKCS11 key store: RFC 7512 key paths, and a real SoftHSM2 token (skipped without one)."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.client import key_tool
from engine.client.cek_envelope import build_envelope, parse_envelope, unwrap_cek
from engine.client.keystores import Pkcs11Provider, parse_pkcs11_uri, redact_pkcs11_uri
from engine.client.keystores.pkcs11_uri import MODULE_ENV, PIN_ENV
from engine.errors import CellAuthenticationError, OperationalError
from tests.support import softhsm

CEK = bytes(range(32))

# --- key paths (no token needed) ------------------------------------------------------------


def test_uri_attributes_are_percent_decoded() -> None:
    key = parse_pkcs11_uri(
        "pkcs11:token=Caf%C3%A9%20HSM;object=cmk%3B1;id=%A0%FF;type=private"
        "?module-path=/usr/lib/x%20y.so&pin-source=file:/run/pin"
    )
    assert key.token == "Café HSM"
    assert key.object == "cmk;1"
    assert key.id == b"\xa0\xff"
    assert key.type == "private"
    assert key.module_path == "/usr/lib/x y.so"
    assert key.pin_source == "file:/run/pin"
    assert key.pin_value is None


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("token=t;object=o", "must start with 'pkcs11:'"),
        ("pkcs11:token=t", "'object' attribute is required"),
        ("pkcs11:object=o", "'token' attribute is required"),
        ("pkcs11:token=t;object=o;token=u", "appears twice"),
        ("pkcs11:token=t;object", "has no '=value'"),
        ("pkcs11:token=t;object=o;colour=red", "unknown path attribute"),
        ("pkcs11:token=t;object=o?pin-valu=1", "unknown query attribute"),
        ("pkcs11:token=t;object=o;type=cert", "type must be 'private'"),
        ("pkcs11:token=%ff;object=o", "not UTF-8"),
        ("pkcs11:token=t;object=o?pin-value=1&pin-source=/p", "not both"),
        ("pkcs11:token=t;object=o#frag", "fragment"),
    ],
)
def test_malformed_uris_say_what_is_wrong(uri: str, problem: str) -> None:
    with pytest.raises(OperationalError) as caught:
        parse_pkcs11_uri(uri)
    assert problem in str(caught.value)


def test_malformed_uri_message_hides_the_pin() -> None:
    with pytest.raises(OperationalError) as caught:
        parse_pkcs11_uri("pkcs11:token=t?pin-value=hunter2-secret")
    assert "hunter2-secret" not in str(caught.value)
    assert "pin-value=***" in str(caught.value)


def test_redaction_covers_every_pin_value_and_case() -> None:
    text = "pkcs11:token=t;object=o?PIN-VALUE=abc&pin-value=def"
    assert "abc" not in redact_pkcs11_uri(text) and "def" not in redact_pkcs11_uri(text)


def test_module_comes_from_the_uri_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODULE_ENV, raising=False)
    assert parse_pkcs11_uri("pkcs11:token=t;object=o?module-path=/a.so").module() == "/a.so"
    with pytest.raises(OperationalError) as caught:
        parse_pkcs11_uri("pkcs11:token=t;object=o").module()
    assert MODULE_ENV in str(caught.value)
    monkeypatch.setenv(MODULE_ENV, "/b.so")
    assert parse_pkcs11_uri("pkcs11:token=t;object=o").module() == "/b.so"


def test_pin_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIN_ENV, raising=False)
    pin_file = tmp_path / "pin file"
    pin_file.write_text("from-file\n", encoding="utf-8")
    base = "pkcs11:token=t;object=o"
    assert parse_pkcs11_uri(base + "?pin-value=direct").pin() == "direct"
    assert parse_pkcs11_uri(f"{base}?pin-source={pin_file}").pin() == "from-file"
    uri = f"{base}?pin-source=file:{str(pin_file).replace(' ', '%20')}"
    assert parse_pkcs11_uri(uri).pin() == "from-file"
    assert parse_pkcs11_uri(base).pin() is None
    monkeypatch.setenv(PIN_ENV, "from-env")
    assert parse_pkcs11_uri(base).pin() == "from-env"
    with pytest.raises(OperationalError) as caught:
        parse_pkcs11_uri(f"{base}?pin-source={tmp_path / 'absent'}").pin()
    assert "pin-source" in str(caught.value)


def test_without_pin_value_keeps_everything_else() -> None:
    key = parse_pkcs11_uri("pkcs11:token=t;object=o?module-path=/m.so&pin-value=1&x-a=b")
    assert key.without_pin_value() == "pkcs11:token=t;object=o?module-path=/m.so&x-a=b"
    assert "pin_value" not in repr(key)


def test_missing_python_pkcs11_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pkcs11(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "pkcs11" or name.startswith("pkcs11."):
            raise ImportError("No module named 'pkcs11'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pkcs11)
    with pytest.raises(OperationalError) as caught:
        Pkcs11Provider().public_key("pkcs11:token=t;object=o?module-path=/m.so")
    assert "pip install 'enclavesql[pkcs11]'" in str(caught.value)


# --- a real token ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token() -> softhsm.SoftHsmToken:
    reason = softhsm.skip_reason()
    if reason:
        pytest.skip(reason)
    return softhsm.shared_token()


def _provider() -> Pkcs11Provider:
    """A provider that may load the SoftHSM module (a client would configure this)."""
    module = softhsm.find_module()
    assert module is not None
    return Pkcs11Provider(allowed_modules=[module])


@pytest.fixture(scope="session")
def cmk_uri(token: softhsm.SoftHsmToken) -> str:
    """A 2048-bit CMK generated on the token through the key tool."""
    uri = token.uri(softhsm.fresh_label())
    status = key_tool.main(
        [
            "create-cmk",
            "--name",
            "HSM_CMK",
            "--provider",
            "PKCS11",
            "--key-path",
            uri,
            "--key-size",
            "2048",
        ]
    )
    assert status == 0
    return uri


@pytest.mark.softhsm
def test_wrap_unwrap_sign_verify_on_the_token(cmk_uri: str) -> None:
    provider = _provider()
    envelope = provider.wrap_cek(cmk_uri, CEK)
    assert provider.unwrap_cek(cmk_uri, envelope) == CEK
    signature = provider.sign_cmk_metadata(cmk_uri, True)
    provider.verify_cmk_metadata(cmk_uri, True, signature)
    with pytest.raises(CellAuthenticationError):
        provider.verify_cmk_metadata(cmk_uri, False, signature)
    # The token's signature is ordinary RSASSA-PKCS1-v1_5-SHA256, checked by another library.
    message = parse_envelope(envelope).signed_message
    provider.public_key(cmk_uri).verify(
        parse_envelope(envelope).signature, message, padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.softhsm
def test_envelope_never_records_the_pin(cmk_uri: str, token: softhsm.SoftHsmToken) -> None:
    envelope = _provider().wrap_cek(cmk_uri, CEK)
    recorded = parse_envelope(envelope).key_path
    assert "pin-value" not in recorded
    assert token.pin.encode("utf-16-le") not in envelope


@pytest.mark.softhsm
def test_tampered_envelope_is_refused(cmk_uri: str) -> None:
    provider = _provider()
    envelope = bytearray(provider.wrap_cek(cmk_uri, CEK))
    envelope[-3] ^= 0x10
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek(cmk_uri, bytes(envelope))


@pytest.mark.softhsm
def test_bad_oaep_ciphertext_is_an_authentication_error(cmk_uri: str) -> None:
    provider = _provider()
    envelope = build_envelope(
        "x", b"\x02" * 256, lambda digest: provider.sign_sha256_digest(cmk_uri, digest)
    )
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek(cmk_uri, envelope)


@pytest.mark.softhsm
def test_private_key_is_sensitive_and_not_extractable(
    cmk_uri: str, token: softhsm.SoftHsmToken
) -> None:
    import pkcs11

    key_path = parse_pkcs11_uri(cmk_uri)
    library = pkcs11.lib(token.module)
    session = library.get_token(token_label=token.label).open(user_pin=None)
    try:
        # Login state is shared per process; the provider's session has logged the token in.
        _provider().public_key(cmk_uri)
        key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=key_path.object)
        assert key[pkcs11.Attribute.SENSITIVE] is True
        assert key[pkcs11.Attribute.EXTRACTABLE] is False
        assert key[pkcs11.Attribute.TOKEN] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[pkcs11.Attribute.PRIVATE_EXPONENT]
    finally:
        session.close()


@pytest.mark.softhsm
def test_pin_from_a_pin_source_file(cmk_uri: str, token: softhsm.SoftHsmToken, tmp_path: Path):  # type: ignore[no-untyped-def]
    pin_file = tmp_path / "pin"
    pin_file.write_text(token.pin + "\n", encoding="utf-8")
    stored = parse_pkcs11_uri(cmk_uri).without_pin_value() + f"&pin-source=file:{pin_file}"
    provider = _provider()
    assert provider.unwrap_cek(stored, provider.wrap_cek(cmk_uri, CEK)) == CEK


@pytest.mark.softhsm
def test_wrong_pin(cmk_uri: str, token: softhsm.SoftHsmToken) -> None:
    # Logged in already with the right PIN: a wrong one must still be refused.
    _provider().public_key(cmk_uri)
    wrong = "9999-wrong-pin"
    key_path = token.uri(parse_pkcs11_uri(cmk_uri).object, pin=wrong)
    with pytest.raises(OperationalError) as caught:
        _provider().public_key(key_path)
    assert wrong not in str(caught.value) and token.pin not in str(caught.value)
    assert "PIN" in str(caught.value) and "pin-value=***" in str(caught.value)


@pytest.mark.softhsm
def test_missing_object(token: softhsm.SoftHsmToken) -> None:
    key_path = token.uri("no-such-object")
    with pytest.raises(OperationalError) as caught:
        _provider().public_key(key_path)
    assert "no private key" in str(caught.value) and token.pin not in str(caught.value)


@pytest.mark.softhsm
def test_missing_token(token: softhsm.SoftHsmToken) -> None:
    key_path = token.uri("x").replace(f"token={token.label}", "token=absent-token")
    with pytest.raises(OperationalError) as caught:
        _provider().public_key(key_path)
    assert "token" in str(caught.value) and token.pin not in str(caught.value)


@pytest.mark.softhsm
def test_module_not_allowed_by_the_client_is_never_loaded(
    token: softhsm.SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MODULE_ENV, raising=False)
    # The module exists and works, but a KEY_PATH from the database alone may not choose it.
    with pytest.raises(OperationalError) as caught:
        Pkcs11Provider().public_key(token.uri("x"))
    message = str(caught.value)
    assert "not allowed" in message and MODULE_ENV in message and token.pin not in message
    monkeypatch.setenv(MODULE_ENV, token.module)
    with pytest.raises(OperationalError) as caught:  # now allowed; the object is missing
        Pkcs11Provider().public_key(token.uri("x"))
    assert "no private key" in str(caught.value)


@pytest.mark.softhsm
def test_bad_module_path(token: softhsm.SoftHsmToken) -> None:
    absent = "/nonexistent/libnothing.so"
    key_path = token.uri("x").replace(token.module, absent)
    with pytest.raises(OperationalError) as caught:
        Pkcs11Provider(allowed_modules=[absent]).public_key(key_path)
    message = str(caught.value)
    assert "cannot be loaded" in message and token.pin not in message


@pytest.mark.softhsm
def test_generating_over_an_existing_object_is_refused(cmk_uri: str) -> None:
    with pytest.raises(OperationalError) as caught:
        _provider().generate_key(cmk_uri, key_size=2048)
    assert "already holds" in str(caught.value)


@pytest.mark.softhsm
@settings(max_examples=15, deadline=None)
@given(
    cek=st.binary(min_size=32, max_size=32),
    recorded_path=st.text(max_size=30).filter(lambda text: "\x00" not in text),
)
def test_round_trip_with_any_cek_and_key_path(cmk_uri: str, cek: bytes, recorded_path: str):  # type: ignore[no-untyped-def]
    provider = _provider()
    assert provider.unwrap_cek(cmk_uri, provider.wrap_cek(cmk_uri, cek)) == cek
    envelope = build_envelope(
        recorded_path,
        provider.rsa_oaep_sha1_encrypt(cmk_uri, cek),
        lambda digest: provider.sign_sha256_digest(cmk_uri, digest),
    )
    assert parse_envelope(envelope).key_path == recorded_path
    assert unwrap_cek(provider, cmk_uri, envelope) == cek


def test_importing_the_engine_does_not_need_python_pkcs11() -> None:
    # A fresh interpreter where `import pkcs11` fails: the key stores must still import.
    code = (
        "import sys; sys.modules['pkcs11'] = None\n"
        "import engine, engine.client.keystores, engine.client.column_keys\n"
        "import engine.client.key_tool\n"
        "print('ok')\n"
    )
    repository = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repository, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

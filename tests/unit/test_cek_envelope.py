"""CEK envelopes (spec 2.1): layout, the order of checks, tampering, round trips, rewrapping."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.client.cek_envelope import (
    EnvelopeAuthenticationError,
    build_envelope,
    parse_envelope,
    rewrap_envelope,
    unwrap_cek,
    wrap_cek,
)
from engine.client.keystores import PemFileProvider
from engine.errors import CellAuthenticationError


class RecordingPemProvider(PemFileProvider):
    """A PEM provider double that records every private-key operation it is asked for."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.unwrap_calls = 0

    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        self.unwrap_calls += 1
        return super().rsa_oaep_sha1_decrypt(key_path, ciphertext)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("envelope-keys")
    provider = PemFileProvider(directory)
    provider.generate_key("a.pem", key_size=2048)
    provider.generate_key("b.pem", key_size=2048)
    provider.generate_key("small.pem", key_size=1024)
    provider.generate_key("Mixed/Case.PEM", key_size=1024)
    return directory


@pytest.fixture
def provider(key_dir) -> RecordingPemProvider:  # type: ignore[no-untyped-def]
    return RecordingPemProvider(key_dir)


CEK = bytes(range(32))


def test_layout_matches_the_spec(provider: RecordingPemProvider) -> None:
    envelope = provider.wrap_cek("a.pem", CEK)
    key_path = "a.pem".encode("utf-16-le")
    assert envelope[0] == 1
    assert struct.unpack_from("<HH", envelope, 1) == (len(key_path), 256)
    assert envelope[5 : 5 + len(key_path)] == key_path
    assert len(envelope) == 5 + len(key_path) + 256 + 256
    # The signature is ordinary RSASSA-PKCS1-v1_5-SHA256 over version .. end of ciphertext.
    signed = envelope[: 5 + len(key_path) + 256]
    provider.public_key("a.pem").verify(
        envelope[-256:], signed, padding.PKCS1v15(), hashes.SHA256()
    )


def test_key_path_is_written_as_given_not_lower_cased(provider: RecordingPemProvider) -> None:
    envelope = provider.wrap_cek("Mixed/Case.PEM", CEK)
    assert parse_envelope(envelope).key_path_bytes == "Mixed/Case.PEM".encode("utf-16-le")


def test_parse_accepts_any_key_path_bytes() -> None:
    # tedious writes UTF-8 here; odd lengths and invalid UTF-16 must still parse.
    body = b"\xff\xfe\x00"
    blob = struct.pack("<BHH", 1, len(body), 2) + body + b"ct" + b"sg"
    parsed = parse_envelope(blob)
    assert parsed.key_path_bytes == body
    assert (parsed.ciphertext, parsed.signature) == (b"ct", b"sg")
    assert parsed.signed_message == blob[:-2]
    assert "\ufffd" in parsed.key_path


def test_repr_hides_ciphertext_and_signature(provider: RecordingPemProvider) -> None:
    envelope = provider.wrap_cek("a.pem", CEK)
    parsed = parse_envelope(envelope)
    assert parsed.ciphertext.hex() not in repr(parsed)
    assert "a.pem" in repr(parsed)


def _regions(envelope: bytes) -> dict[str, int]:
    path_len, ct_len = struct.unpack_from("<HH", envelope, 1)
    return {
        "version": 0,
        "key_path_length_low": 1,
        "key_path_length_high": 2,
        "ciphertext_length_low": 3,
        "ciphertext_length_high": 4,
        "key_path": 5,
        "key_path_last": 4 + path_len,
        "ciphertext_first": 5 + path_len,
        "ciphertext_last": 4 + path_len + ct_len,
        "signature_first": 5 + path_len + ct_len,
        "signature_last": len(envelope) - 1,
    }


@pytest.mark.parametrize(
    "region",
    [
        "version",
        "key_path_length_low",
        "key_path_length_high",
        "ciphertext_length_low",
        "ciphertext_length_high",
        "key_path",
        "key_path_last",
        "ciphertext_first",
        "ciphertext_last",
        "signature_first",
        "signature_last",
    ],
)
@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_every_tampered_region_is_refused_before_unwrap(
    provider: RecordingPemProvider, region: str, flip: int
) -> None:
    envelope = bytearray(provider.wrap_cek("a.pem", CEK))
    envelope[_regions(bytes(envelope))[region]] ^= flip
    with pytest.raises(CellAuthenticationError) as caught:
        provider.unwrap_cek("a.pem", bytes(envelope))
    assert provider.unwrap_calls == 0
    assert str(caught.value) == EnvelopeAuthenticationError.MESSAGE


@pytest.mark.parametrize("cut", [0, 1, 4, 5, 20, 200, 300, 400, -256, -1])
def test_truncated_envelopes_are_refused_before_unwrap(
    provider: RecordingPemProvider, cut: int
) -> None:
    envelope = provider.wrap_cek("a.pem", CEK)
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", envelope[:cut])
    assert provider.unwrap_calls == 0


def test_extended_envelope_is_refused(provider: RecordingPemProvider) -> None:
    envelope = provider.wrap_cek("a.pem", CEK)
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", envelope + b"\x00")
    assert provider.unwrap_calls == 0


def test_envelope_of_another_cmk_is_refused_before_unwrap(provider: RecordingPemProvider) -> None:
    envelope = provider.wrap_cek("b.pem", CEK)
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", envelope)
    assert provider.unwrap_calls == 0


def test_modulus_size_mismatch_is_refused_before_unwrap(provider: RecordingPemProvider) -> None:
    small = provider.wrap_cek("small.pem", CEK)  # 128-byte ciphertext and signature
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", small)
    assert provider.unwrap_calls == 0


def test_validly_signed_but_undecryptable_ciphertext_is_refused(
    provider: RecordingPemProvider,
) -> None:
    # Signed by the CMK, but the "wrapped key" is not an OAEP ciphertext: the unwrap must fail
    # with the same authentication error, not a ValueError from the RSA library.
    envelope = build_envelope(
        "a.pem",
        b"\x01" * 256,
        lambda digest: provider.sign_sha256_digest("a.pem", digest),
    )
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", envelope)
    assert provider.unwrap_calls == 1


def test_every_envelope_failure_has_the_one_message_that_names_the_fix(
    provider: RecordingPemProvider,
) -> None:
    # Wrong CMK, truncation, a resized modulus and a signed-but-undecryptable key look alike to
    # the caller (no oracle), and the message says what to check: the CMK at the KEY_PATH.
    good = provider.wrap_cek("a.pem", CEK)
    failures = {
        "another CMK": ("a.pem", provider.wrap_cek("b.pem", CEK)),
        "truncated": ("a.pem", good[:-1]),
        "modulus size": ("a.pem", provider.wrap_cek("small.pem", CEK)),
        "undecryptable": (
            "a.pem",
            build_envelope(
                "a.pem", b"\x01" * 256, lambda d: provider.sign_sha256_digest("a.pem", d)
            ),
        ),
    }
    messages = set()
    for key_path, envelope in failures.values():
        with pytest.raises(EnvelopeAuthenticationError) as caught:
            provider.unwrap_cek(key_path, envelope)
        assert isinstance(caught.value, CellAuthenticationError)
        messages.add(str(caught.value))
    assert messages == {EnvelopeAuthenticationError.MESSAGE}
    assert "KEY_PATH" in EnvelopeAuthenticationError.MESSAGE
    assert "column master key" in EnvelopeAuthenticationError.MESSAGE


def test_double_hash_signature_is_accepted_on_read(provider: RecordingPemProvider) -> None:
    # CNG/CSP providers sign SHA-256(SHA-256(message)); we read those, we never write them.
    wrapped = provider.rsa_oaep_sha1_encrypt("a.pem", CEK)
    key = provider._private_key("a.pem")

    def double_hash_sign(digest: bytes) -> bytes:
        return key.sign(
            hashlib.sha256(digest).digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )

    envelope = build_envelope("a.pem", wrapped, double_hash_sign)
    assert unwrap_cek(provider, "a.pem", envelope) == CEK


def test_build_refuses_a_signature_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        build_envelope("k", b"\x01" * 4, lambda digest: b"\x02" * 3)


def test_rewrap_moves_the_same_cek_to_a_new_cmk(provider: RecordingPemProvider) -> None:
    old = provider.wrap_cek("a.pem", CEK)
    new = rewrap_envelope(provider, "a.pem", old, provider, "b.pem")
    assert parse_envelope(new).key_path == "b.pem"
    assert provider.unwrap_cek("b.pem", new) == CEK
    with pytest.raises(CellAuthenticationError):
        provider.unwrap_cek("a.pem", new)


def test_rewrap_refuses_a_tampered_source(provider: RecordingPemProvider) -> None:
    old = bytearray(provider.wrap_cek("a.pem", CEK))
    old[-1] ^= 1
    with pytest.raises(CellAuthenticationError):
        rewrap_envelope(provider, "a.pem", bytes(old), provider, "b.pem")


@settings(max_examples=25, deadline=None)
@given(
    cek=st.binary(min_size=32, max_size=32),
    key_path=st.text(min_size=0, max_size=40).filter(lambda text: "\x00" not in text),
)
def test_round_trip_with_any_cek_and_key_path(key_dir, cek: bytes, key_path: str) -> None:  # type: ignore[no-untyped-def]
    # The key path inside the envelope is free text (here also non-ASCII); the CMK is a.pem.
    provider = PemFileProvider(key_dir)
    wrapped = provider.rsa_oaep_sha1_encrypt("a.pem", cek)
    envelope = build_envelope(
        key_path, wrapped, lambda digest: provider.sign_sha256_digest("a.pem", digest)
    )
    assert parse_envelope(envelope).key_path == key_path
    assert unwrap_cek(provider, "a.pem", envelope) == cek
    assert unwrap_cek(provider, "a.pem", wrap_cek(provider, "a.pem", cek)) == cek

"""CEK envelope attacks by a host that controls the catalog but holds no CMK private key, beyond
tests/unit/test_cek_envelope.py: attacker-chosen CEKs signed by the attacker, transplanted
signatures, envelopes swapped between CEKs of different CMKs and of one CMK, and a cached CEK
that must not be served for a tampered copy of its envelope.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from enclave.reference import decrypt_cell, encrypt_deterministic
from engine.client.cek_cache import CekCache
from engine.client.cek_envelope import EnvelopeAuthenticationError, build_envelope, parse_envelope
from engine.client.column_keys import ColumnKeyResolver, cek_key_check
from engine.client.keystores import PemFileProvider, build_registry
from engine.client.keystores.base import oaep_sha1
from engine.errors import CellAuthenticationError

CEK_1 = bytes(range(32))
CEK_2 = bytes(range(32, 64))
ATTACKER_CEK = b"\xa5" * 32


class RecordingProvider(PemFileProvider):
    """A PEM_FILE store that counts private-key unwraps, to prove none happened."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.unwraps = 0

    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        self.unwraps += 1
        return super().rsa_oaep_sha1_decrypt(key_path, ciphertext)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tamper-keys")
    provider = PemFileProvider(directory)
    provider.generate_key("cmk_a.pem", key_size=2048)
    provider.generate_key("cmk_b.pem", key_size=2048)
    return directory


@pytest.fixture
def store(key_dir: Path) -> RecordingProvider:
    return RecordingProvider(key_dir)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _resolver(store: RecordingProvider) -> ColumnKeyResolver:
    registry = build_registry({"RECORDING": store}, key_directory=store.resolve("."))
    return ColumnKeyResolver(registry, CekCache())


def _sign_with(key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_a_cek_of_the_attackers_choice_signed_by_the_attacker_is_refused_before_unwrap(
    store: RecordingProvider, attacker_key: rsa.RSAPrivateKey
) -> None:
    # The CMK's public key is public, so anyone can wrap a CEK under it; only the signature
    # stops the host from planting a key it knows and reading every cell written under it.
    wrapped = store.public_key("cmk_a.pem").encrypt(ATTACKER_CEK, oaep_sha1())
    forged = build_envelope("cmk_a.pem", wrapped, lambda digest: _sign_with(attacker_key, digest))
    with pytest.raises(CellAuthenticationError) as caught:
        _resolver(store).cek_for("RECORDING", "cmk_a.pem", forged)
    assert str(caught.value) == EnvelopeAuthenticationError.MESSAGE
    assert store.unwraps == 0


def test_a_double_hash_signature_by_the_attacker_is_refused_too(
    store: RecordingProvider, attacker_key: rsa.RSAPrivateKey
) -> None:
    wrapped = store.public_key("cmk_a.pem").encrypt(ATTACKER_CEK, oaep_sha1())
    forged = build_envelope(
        "cmk_a.pem",
        wrapped,
        lambda digest: _sign_with(attacker_key, hashlib.sha256(digest).digest()),
    )
    with pytest.raises(CellAuthenticationError):
        _resolver(store).cek_for("RECORDING", "cmk_a.pem", forged)
    assert store.unwraps == 0


def test_a_genuine_signature_transplanted_onto_the_attackers_ciphertext_is_refused(
    store: RecordingProvider,
) -> None:
    genuine = parse_envelope(store.wrap_cek("cmk_a.pem", CEK_1))
    wrapped = store.public_key("cmk_a.pem").encrypt(ATTACKER_CEK, oaep_sha1())
    transplanted = build_envelope("cmk_a.pem", wrapped, lambda digest: genuine.signature)
    with pytest.raises(CellAuthenticationError):
        _resolver(store).cek_for("RECORDING", "cmk_a.pem", transplanted)
    assert store.unwraps == 0


def test_envelopes_swapped_between_ceks_of_different_cmks_are_refused(
    store: RecordingProvider,
) -> None:
    # CEK_1 is wrapped by CMK A and CEK_2 by CMK B; the host swaps their ENCRYPTED_VALUEs.
    envelope_1 = store.wrap_cek("cmk_a.pem", CEK_1)
    envelope_2 = store.wrap_cek("cmk_b.pem", CEK_2)
    resolver = _resolver(store)
    for key_path, swapped in (("cmk_a.pem", envelope_2), ("cmk_b.pem", envelope_1)):
        with pytest.raises(CellAuthenticationError):
            resolver.cek_for_any([("RECORDING", key_path, swapped)])
    assert store.unwraps == 0


def test_a_swapped_rotation_value_cannot_replace_the_genuine_one(
    store: RecordingProvider,
) -> None:
    # During rotation a CEK has two values; the host puts another CEK's envelope (wrapped by
    # CMK A) in the slot of the value under CMK B. It is refused, and the genuine value wins.
    envelope_1 = store.wrap_cek("cmk_a.pem", CEK_1)
    foreign = store.wrap_cek("cmk_a.pem", CEK_2)
    resolver = _resolver(store)
    values = [("RECORDING", "cmk_b.pem", foreign), ("RECORDING", "cmk_a.pem", envelope_1)]
    assert resolver.cek_for_any(values) == CEK_1
    assert store.unwraps == 1
    with pytest.raises(CellAuthenticationError):
        resolver.cek_for_any(values[:1])


def test_swapping_envelopes_between_ceks_of_one_cmk_gives_no_wrong_answer(
    store: RecordingProvider,
) -> None:
    # The envelope does not name its CEK, so swapping the ENCRYPTED_VALUEs of two CEKs under
    # the same CMK unwraps the other key: cells then fail authentication instead of decrypting
    # to wrong values, and the CEK's key check (docs/keys.md) refuses the key before any use.
    envelope_1 = store.wrap_cek("cmk_a.pem", CEK_1)
    envelope_2 = store.wrap_cek("cmk_a.pem", CEK_2)
    cell_under_cek_1 = encrypt_deterministic(CEK_1, b"123-45-6789")
    resolved_for_cek_1 = _resolver(store).cek_for("RECORDING", "cmk_a.pem", envelope_2)
    assert resolved_for_cek_1 == CEK_2
    with pytest.raises(CellAuthenticationError):
        decrypt_cell(resolved_for_cek_1, cell_under_cek_1)
    assert _resolver(store).cek_for("RECORDING", "cmk_a.pem", envelope_1) == CEK_1
    check_1 = cek_key_check(CEK_1, "cek1")
    with pytest.raises(CellAuthenticationError):
        _resolver(store).cek_for_checked("cek1", [("RECORDING", "cmk_a.pem", envelope_2, check_1)])
    checked = [("RECORDING", "cmk_a.pem", envelope_1, check_1)]
    assert _resolver(store).cek_for_checked("cek1", checked) == CEK_1


def test_a_cached_key_is_not_served_for_a_tampered_copy_of_its_envelope(
    store: RecordingProvider,
) -> None:
    envelope = store.wrap_cek("cmk_a.pem", CEK_1)
    resolver = _resolver(store)
    assert resolver.cek_for("RECORDING", "cmk_a.pem", envelope) == CEK_1
    tampered = bytearray(envelope)
    tampered[7] ^= 0x01  # inside the recorded key path, which the signature covers
    with pytest.raises(CellAuthenticationError):
        resolver.cek_for("RECORDING", "cmk_a.pem", bytes(tampered))
    assert store.unwraps == 1


def test_refusals_carry_no_envelope_bytes(
    store: RecordingProvider, attacker_key: rsa.RSAPrivateKey
) -> None:
    wrapped = store.public_key("cmk_a.pem").encrypt(ATTACKER_CEK, oaep_sha1())
    forged = build_envelope("cmk_a.pem", wrapped, lambda digest: _sign_with(attacker_key, digest))
    with pytest.raises(CellAuthenticationError) as caught:
        _resolver(store).cek_for("RECORDING", "cmk_a.pem", forged)
    message = str(caught.value)
    for secret in (forged.hex(), wrapped.hex()[:16], ATTACKER_CEK.hex()):
        assert secret not in message
    assert message == EnvelopeAuthenticationError.MESSAGE

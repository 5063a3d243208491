"""Fuzz target: the CEK envelope (spec 2.1), `parse_envelope` and a full `unwrap_cek` through a
PEM_FILE provider whose RSA key is made once per process in a temporary directory.

Only the fixed `CellAuthenticationError` may escape, and an unwrap that succeeds must return the
CEK that was wrapped. It must not write key material outside its temporary directory.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
from collections.abc import Iterable

from engine.client.cek_envelope import EnvelopeAuthenticationError, parse_envelope, unwrap_cek
from engine.client.keystores import PemFileProvider
from engine.errors import CellAuthenticationError

KEY_PATH = "cmk.pem"
CEK = bytes(range(32))

# The first byte's low two bits pick how the rest becomes an envelope.
RAW = 0  # the rest is the envelope
FLIP = 1  # (u16 position, xor byte) triples patched into a valid envelope
CUT = 2  # a valid envelope cut or extended to a u16 length, extended with the rest
HEADER = 3  # a valid envelope with its two u16 length fields replaced

_directory = tempfile.mkdtemp(prefix="enclavesql-fuzz-envelope-")
atexit.register(shutil.rmtree, _directory, True)
PROVIDER = PemFileProvider(_directory)
PROVIDER.generate_key(KEY_PATH, key_size=2048)
VALID = PROVIDER.wrap_cek(KEY_PATH, CEK)


def seeds() -> Iterable[bytes]:
    return [
        bytes([RAW]) + VALID,
        bytes([FLIP]) + struct.pack("<HB", 0, 1),
        bytes([FLIP]) + struct.pack("<HB", len(VALID) - 1, 0x80),
        bytes([CUT]) + struct.pack("<H", len(VALID) - 1),
        bytes([CUT]) + struct.pack("<H", len(VALID) + 2) + b"\x00\x00",
        bytes([HEADER]) + struct.pack("<HH", 0, 256),
    ]


def envelope_from(data: bytes) -> bytes:
    """The envelope an input stands for.

    >>> envelope_from(bytes([RAW]) + b"abc")
    b'abc'
    >>> envelope_from(bytes([CUT]) + struct.pack("<H", 5)) == VALID[:5]
    True
    """
    if not data:
        return b""
    mode, rest = data[0] & 3, data[1:]
    if mode == RAW:
        return rest
    if mode == FLIP:
        patched = bytearray(VALID)
        for at in range(0, len(rest) - 2, 3):
            position, value = struct.unpack_from("<HB", rest, at)
            patched[position % len(patched)] ^= value
        return bytes(patched)
    if mode == CUT:
        length = struct.unpack_from("<H", rest.ljust(2, b"\x00"))[0]
        return (VALID + rest[2:])[:length]
    key_path_len, ciphertext_len = struct.unpack_from("<HH", rest.ljust(4, b"\x00"))
    return VALID[:1] + struct.pack("<HH", key_path_len, ciphertext_len) + VALID[5:]


def test_one_input(data: bytes) -> None:
    """Parse and unwrap; only the two fixed authentication messages may escape.

    >>> test_one_input(bytes([RAW]) + VALID)
    >>> test_one_input(bytes([FLIP]) + struct.pack("<HB", 9, 1))
    """
    envelope = envelope_from(data)
    try:
        parse_envelope(envelope)
        cek = unwrap_cek(PROVIDER, KEY_PATH, envelope)
    except CellAuthenticationError as error:
        assert str(error) in (CellAuthenticationError.MESSAGE, EnvelopeAuthenticationError.MESSAGE)
        return
    # Only an envelope that the CMK signed can unwrap, and it signed one CEK only.
    assert cek == CEK, "an envelope the CMK never signed was accepted"

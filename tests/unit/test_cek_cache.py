"""The CEK cache: TTL expiry with buffer zeroing, TTL 0, failures not cached, thread safety."""

from __future__ import annotations

import threading

import pytest

from engine.client.cek_cache import DEFAULT_TTL_SECONDS, CekCache
from engine.errors import OperationalError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_default_ttl_is_two_hours() -> None:
    assert CekCache().ttl_seconds == DEFAULT_TTL_SECONDS == 7200


def test_entry_is_gone_and_zeroed_after_its_ttl() -> None:
    clock = FakeClock()
    cache = CekCache(ttl_seconds=60, clock=clock)
    buffer = bytearray(b"\x5a" * 32)
    cache.put("PEM_FILE", "cmk.pem", b"envelope", buffer)
    clock.now += 59.9
    assert cache.get("PEM_FILE", "cmk.pem", b"envelope") == b"\x5a" * 32
    assert buffer == b"\x5a" * 32
    clock.now += 0.1
    assert cache.get("PEM_FILE", "cmk.pem", b"envelope") is None
    assert len(cache) == 0
    assert buffer == bytes(32)


def test_clear_zeroes_every_entry() -> None:
    cache = CekCache()
    buffers = [bytearray(b"\x01" * 32), bytearray(b"\x02" * 32)]
    cache.put("PEM_FILE", "a.pem", b"e1", buffers[0])
    cache.put("PEM_FILE", "b.pem", b"e2", buffers[1])
    cache.clear()
    assert len(cache) == 0
    assert buffers == [bytearray(32), bytearray(32)]


def test_replacing_an_entry_zeroes_the_old_buffer() -> None:
    cache = CekCache()
    old = bytearray(b"\x07" * 32)
    cache.put("PEM_FILE", "a.pem", b"e", old)
    cache.put("PEM_FILE", "a.pem", b"e", b"\x08" * 32)
    assert old == bytes(32)
    assert cache.get("PEM_FILE", "a.pem", b"e") == b"\x08" * 32


def test_ttl_zero_disables_caching() -> None:
    cache = CekCache(ttl_seconds=0)
    calls = []
    for _ in range(3):
        cache.get_or_load("PEM_FILE", "a.pem", b"e", lambda: calls.append(1) or b"k" * 32)
    assert len(calls) == 3
    assert len(cache) == 0


def test_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError):
        CekCache(ttl_seconds=-1)


def test_key_distinguishes_envelope_and_path_and_folds_provider_case() -> None:
    cache = CekCache()
    cache.put("pem_file", "a.pem", b"e", b"\x01" * 32)
    assert cache.get("PEM_FILE", "a.pem", b"e") == b"\x01" * 32
    assert cache.get("PEM_FILE", "a.pem", b"other envelope") is None
    assert cache.get("PEM_FILE", "b.pem", b"e") is None


def test_failures_are_never_cached() -> None:
    cache = CekCache()
    attempts = []

    def failing() -> bytes:
        attempts.append(1)
        raise OperationalError("key store unreachable")

    for _ in range(2):
        with pytest.raises(OperationalError):
            cache.get_or_load("PKCS11", "pkcs11:token=t;object=o", b"e", failing)
    assert len(attempts) == 2
    assert len(cache) == 0
    # Once the store answers, the key is loaded and then served from the cache.
    assert cache.get_or_load("PKCS11", "pkcs11:token=t;object=o", b"e", lambda: b"k" * 32)
    assert cache.get_or_load("PKCS11", "pkcs11:token=t;object=o", b"e", failing) == b"k" * 32
    assert len(attempts) == 2


def test_concurrent_use_stays_consistent() -> None:
    clock = FakeClock()
    cache = CekCache(ttl_seconds=5, clock=clock)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for round_number in range(200):
                envelope = bytes([index % 4, round_number % 8])
                expected = bytes([index % 4]) * 32
                got = cache.get_or_load("PEM_FILE", "a.pem", envelope, lambda value=expected: value)
                assert got == expected
                if round_number % 50 == 0:
                    clock.now += 1
        except BaseException as error:  # noqa: BLE001 - reported to the main thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 32

"""Secrets in memory: no plaintext CEK reachable from the client's key resolver outlives its cache
TTL, every dropped buffer is zeroed, and a failed unwrap leaves nothing behind.

The resolver runs with a real PEM_FILE key store and an injected clock; the test walks every
object reachable from the resolver (instances and containers, not classes or modules).
"""

from __future__ import annotations

import gc
import types
from pathlib import Path

import pytest

from engine.client.cek_cache import CekCache
from engine.client.column_keys import ColumnKeyResolver
from engine.client.keystores import PemFileProvider, build_registry
from engine.errors import CellAuthenticationError, OperationalError

CEK = bytes(range(7, 39))
OTHER_CEK = bytes(range(80, 112))
TTL = 600.0
# Classes, modules and functions lead to every global of the program; a CEK held there would
# not be the resolver's. Everything else (instances, dicts, lists, tuples) is followed.
_NOT_FOLLOWED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                 types.MethodType, types.CodeType)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


class CountingProvider(PemFileProvider):
    """A PEM_FILE store that counts unwraps, to tell a cache hit from a fresh unwrap."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.unwraps = 0

    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        self.unwraps += 1
        return super().rsa_oaep_sha1_decrypt(key_path, ciphertext)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lifetime-keys")
    PemFileProvider(directory).generate_key("cmk.pem", key_size=2048)
    return directory


def _resolver(key_dir: Path, clock: Clock, ttl: float = TTL):  # type: ignore[no-untyped-def]
    store = CountingProvider(key_dir)
    registry = build_registry({"COUNTING": store}, key_directory=key_dir)
    return ColumnKeyResolver(registry, CekCache(ttl, clock=clock)), store


def reachable_buffers(root: object) -> list[bytes | bytearray]:
    """Every bytes or bytearray object reachable from `root` through instances and containers."""
    found: list[bytes | bytearray] = []
    seen: set[int] = set()
    pending = [root]
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, _NOT_FOLLOWED):
            continue
        seen.add(id(item))
        if isinstance(item, bytes | bytearray):
            found.append(item)
            continue
        pending.extend(gc.get_referents(item))
    return found


def _holding(root: object, value: bytes) -> list[bytes | bytearray]:
    return [buffer for buffer in reachable_buffers(root) if buffer == value]


def test_the_walk_finds_a_cached_key_and_the_resolver_keeps_only_a_bytearray(
    key_dir: Path,
) -> None:
    clock = Clock()
    resolver, store = _resolver(key_dir, clock)
    envelope = store.wrap_cek("cmk.pem", CEK)
    assert _holding(resolver, CEK) == []
    assert resolver.cek_for("COUNTING", "cmk.pem", envelope) == CEK
    held = _holding(resolver, CEK)
    # Exactly one copy, and a mutable one, so that it can be wiped.
    assert len(held) == 1 and isinstance(held[0], bytearray)


def test_a_cached_key_is_zeroed_and_unreachable_once_its_ttl_ends(key_dir: Path) -> None:
    clock = Clock()
    resolver, store = _resolver(key_dir, clock)
    envelope = store.wrap_cek("cmk.pem", CEK)
    other_envelope = store.wrap_cek("cmk.pem", OTHER_CEK)
    assert resolver.cek_for("COUNTING", "cmk.pem", envelope) == CEK
    [buffer] = _holding(resolver, CEK)
    clock.now += TTL - 1
    assert resolver.cek_for("COUNTING", "cmk.pem", envelope) == CEK
    assert store.unwraps == 1  # still served from the cache
    clock.now += 1
    # Any use of the resolver purges expired entries; resolving another key is such a use.
    assert resolver.cek_for("COUNTING", "cmk.pem", other_envelope) == OTHER_CEK
    assert buffer == bytes(len(CEK))
    assert _holding(resolver, CEK) == []
    # The key is unwrapped again from the key store, not resurrected from memory.
    assert resolver.cek_for("COUNTING", "cmk.pem", envelope) == CEK
    assert store.unwraps == 3


def test_clearing_the_cache_zeroes_every_key(key_dir: Path) -> None:
    resolver, store = _resolver(key_dir, Clock())
    for cek in (CEK, OTHER_CEK):
        resolver.cek_for("COUNTING", "cmk.pem", store.wrap_cek("cmk.pem", cek))
    buffers = _holding(resolver, CEK) + _holding(resolver, OTHER_CEK)
    assert len(buffers) == 2
    resolver.clear_cache()
    assert all(buffer == bytes(32) for buffer in buffers)
    assert _holding(resolver, CEK) == _holding(resolver, OTHER_CEK) == []


def test_ttl_zero_keeps_no_key_at_all(key_dir: Path) -> None:
    resolver, store = _resolver(key_dir, Clock(), ttl=0)
    envelope = store.wrap_cek("cmk.pem", CEK)
    assert resolver.cek_for("COUNTING", "cmk.pem", envelope) == CEK
    assert _holding(resolver, CEK) == []


def test_failed_unwraps_leave_no_key_behind(key_dir: Path, tmp_path: Path) -> None:
    clock = Clock()
    resolver, store = _resolver(key_dir, clock)
    tampered = bytearray(store.wrap_cek("cmk.pem", CEK))
    tampered[-1] ^= 1
    with pytest.raises(CellAuthenticationError):
        resolver.cek_for("COUNTING", "cmk.pem", bytes(tampered))
    assert _holding(resolver, CEK) == []
    assert resolver.cek_for("COUNTING", "cmk.pem", store.wrap_cek("cmk.pem", CEK)) == CEK


def test_an_unreachable_key_store_is_not_cached(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    PemFileProvider(source).generate_key("late.pem", key_size=2048)
    envelope = PemFileProvider(source).wrap_cek("late.pem", CEK)
    target.mkdir()
    resolver = ColumnKeyResolver(build_registry(key_directory=target), CekCache(TTL))
    with pytest.raises(OperationalError):
        resolver.cek_for("PEM_FILE", "late.pem", envelope)  # the key file is not there yet
    assert _holding(resolver, CEK) == []
    (target / "late.pem").write_bytes((source / "late.pem").read_bytes())
    # The very same request now succeeds: the failure was not remembered.
    assert resolver.cek_for("PEM_FILE", "late.pem", envelope) == CEK

"""The CEK cache's native keys and remembered key checks: one native key per cached CEK, wiped
and freed whenever the CEK leaves the cache (TTL, replacement, clear, connection close), none
with TTL 0; a key check that passed is remembered per entry, a failure never is."""

from __future__ import annotations

from pathlib import Path

import pytest

binding = pytest.importorskip(
    "enclave.binding", reason="the native codec (enclave.binding) is not built"
)

import engine  # noqa: E402
from engine.client.cek_cache import CekCache  # noqa: E402
from engine.client.codec import encrypt_values  # noqa: E402
from engine.errors import CellAuthenticationError  # noqa: E402
from tests.support.keys import CEK1_KEYS  # noqa: E402

CEK = bytes(range(32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Checks:
    """A key check that counts its runs and fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.runs = 0
        self.failing = False

    def __call__(self, cek: bytes) -> None:
        self.runs += 1
        if self.failing:
            raise CellAuthenticationError()


def _lookup(cache: CekCache, check: Checks, check_id: bytes = b"cek1", *, native: bool = True):  # type: ignore[no-untyped-def]
    return cache.get_or_load_checked(
        "PEM_FILE", "cmk.pem", b"envelope", lambda: CEK, check, check_id, native=native
    )


def test_one_native_key_per_cached_cek_used_by_the_codec() -> None:
    cache = CekCache()
    first = _lookup(cache, Checks())
    second = _lookup(cache, Checks())
    assert first.cek == second.cek == CEK
    assert first.native is not None and first.native is second.native
    assert not first.native.closed
    cells = encrypt_values(["a"], first, "DETERMINISTIC", "VARCHAR")
    assert cells == encrypt_values(["a"], CEK, "DETERMINISTIC", "VARCHAR")
    assert _lookup(cache, Checks(), native=False).native is None  # bytes only, when asked so


@pytest.mark.parametrize("how", ["ttl", "clear", "replace"])
def test_the_native_key_is_wiped_when_the_cek_leaves_the_cache(how: str) -> None:
    clock = FakeClock()
    cache = CekCache(60, clock=clock)
    native = _lookup(cache, Checks()).native
    assert native is not None
    if how == "ttl":
        clock.now += 60
        assert len(cache) == 0
    elif how == "clear":
        cache.clear()
    else:
        cache.put("PEM_FILE", "cmk.pem", b"envelope", bytearray(CEK))
    assert native.closed
    with pytest.raises(engine.InterfaceError):
        binding.encrypt_values(native, [b"x"], deterministic=True)
    fresh = _lookup(cache, Checks()).native
    assert fresh is not None and fresh is not native and not fresh.closed


def test_ttl_zero_loads_no_native_key_and_checks_every_time() -> None:
    cache = CekCache(0)
    check = Checks()
    assert _lookup(cache, check).native is None
    _lookup(cache, check)
    assert check.runs == 2


def test_a_passed_check_is_remembered_and_a_failure_never_is() -> None:
    cache = CekCache()
    check = Checks()
    check.failing = True
    for _ in range(2):
        with pytest.raises(CellAuthenticationError):
            _lookup(cache, check)
    assert check.runs == 2
    check.failing = False
    _lookup(cache, check)
    _lookup(cache, check)
    assert check.runs == 3  # once passed, not run again for this entry and check id
    check.failing = True
    with pytest.raises(CellAuthenticationError):
        _lookup(cache, check, b"another name or check")  # another check id runs its check
    cache.clear()
    with pytest.raises(CellAuthenticationError):
        _lookup(cache, check)  # a new entry remembers nothing


def _native_keys(connection: engine.Connection) -> list[object]:
    entries = connection._client.resolver._cache._entries  # type: ignore[attr-defined]
    return [entry.native for entry in entries.values() if entry.native is not None]


def test_a_connection_loads_each_key_once_and_wipes_it_on_close(tmp_path: Path) -> None:
    from engine.client.keystores import build_registry

    build_registry(key_directory=tmp_path).get("PEM_FILE").generate_key("cmk.pem")
    con = engine.connect(":memory:", key_dir=str(tmp_path))
    for statement in CEK1_KEYS:
        con.execute(statement)
    con.execute(
        "CREATE TABLE t (id INTEGER, ssn VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, "
        "ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
    )
    con.execute("INSERT INTO t VALUES (1, ?), (2, ?)", ["a", "b"])
    (native,) = _native_keys(con)
    for _ in range(3):
        assert con.execute("SELECT id, ssn FROM t WHERE ssn = ?", ["b"]).fetchall() == [(2, "b")]
    assert _native_keys(con) == [native]  # the same key, not loaded again
    con.close()
    assert native.closed  # type: ignore[attr-defined]


def test_cached_keys_leave_native_slots_for_keys_loaded_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past their share of the process's native key slots, caches keep bytes only and the
    codec loads a key per call: many open connections never exhaust the slots."""
    import engine.client.cek_cache as cek_cache

    monkeypatch.setattr(cek_cache, "NATIVE_KEYS_MAX", cek_cache._native_held + 1)
    first, second = CekCache(), CekCache()
    held = _lookup(first, Checks()).native
    assert held is not None
    over = _lookup(second, Checks())
    assert over.native is None
    assert encrypt_values(["a"], over, "DETERMINISTIC", "VARCHAR") == encrypt_values(
        ["a"], CEK, "DETERMINISTIC", "VARCHAR"
    )
    first.clear()  # gives its slot back
    assert _lookup(second, Checks()).native is not None
    second.clear()


def test_a_cache_dropped_without_clear_wipes_its_native_key() -> None:
    import gc

    cache = CekCache()
    native = _lookup(cache, Checks()).native
    assert native is not None
    del cache
    gc.collect()
    assert native.closed

"""A thread-safe, time-limited cache of unwrapped column encryption keys (CEKs).

Entries are keyed by (provider, key path, SHA-256 of the envelope) and expire after a TTL (two
hours by default; 0 disables caching). An entry may also hold the key loaded into the native codec
(loaded on first use, so statements do not load it again) and the key checks it has passed. It
must never cache a failure, and it zeroes the buffer, and wipes and frees the native key, of every
entry it drops. Python may still hold other copies of a key; this narrows, not closes, that.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import log

if TYPE_CHECKING:
    from enclave.binding import CellKey

__all__ = ["CekCache", "ColumnKey", "DEFAULT_TTL_SECONDS"]

DEFAULT_TTL_SECONDS = 2 * 60 * 60.0

CacheKey = tuple[str, str, bytes]

# The native codec has 256 key slots per process. Cached keys of all connections together hold at
# most this many, so that keys loaded for one call (TTL 0, more connections) always find a slot.
NATIVE_KEYS_MAX = 128
_native_held = 0
_native_lock = threading.Lock()


@dataclass
class _Entry:
    cek: bytearray
    expires_at: float
    native: CellKey | None = None  # loaded on first request, wiped and freed with the entry
    checks: set[bytes] = field(default_factory=set)  # ids of key checks this CEK has passed


@dataclass(frozen=True, eq=False)
class ColumnKey:
    """A CEK as the codec takes it: the key bytes, and the cache's native key when there is one.

    ``native`` belongs to the cache, which may wipe it at any time (TTL, clear); a codec that
    finds it closed loads ``cek`` itself for that one call. Never in a repr.
    """

    cek: bytes = field(repr=False)
    native: CellKey | None = field(default=None, repr=False)


class CekCache:
    """Unwrapped CEKs with a time to live; `clock` is injectable for tests.

    >>> now = [0.0]
    >>> cache = CekCache(ttl_seconds=10, clock=lambda: now[0])
    >>> cache.get_or_load("PEM_FILE", "cmk.pem", b"envelope", lambda: b"k" * 32) == b"k" * 32
    True
    >>> len(cache)
    1
    >>> now[0] = 10.0
    >>> len(cache)  # expired entries are removed (and zeroed) on the next access
    0
    """

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be 0 (no caching) or positive")
        self._ttl = float(ttl_seconds)
        self._clock = clock
        self._entries: dict[CacheKey, _Entry] = {}
        self._lock = threading.Lock()

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    @staticmethod
    def key(provider_name: str, key_path: str, envelope: bytes) -> CacheKey:
        """The cache key: provider names are case-insensitive, key paths are taken as given."""
        return (provider_name.casefold(), key_path, hashlib.sha256(bytes(envelope)).digest())

    def get(self, provider_name: str, key_path: str, envelope: bytes) -> bytes | None:
        """The cached CEK, or None when absent or expired."""
        key = self.key(provider_name, key_path, envelope)
        with self._lock:
            self._purge_locked()
            entry = self._entries.get(key)
            return bytes(entry.cek) if entry is not None else None

    def put(
        self, provider_name: str, key_path: str, envelope: bytes, cek: bytes | bytearray
    ) -> None:
        """Remember `cek` until the TTL runs out (does nothing when the TTL is 0).

        A bytearray is taken over, not copied: the cache zeroes that very buffer when it drops
        the entry, so a caller that hands over its only copy leaves none behind.
        """
        if self._ttl == 0:
            return
        key = self.key(provider_name, key_path, envelope)
        with self._lock:
            self._purge_locked()
            old = self._entries.pop(key, None)
            if old is not None:
                _drop(old)
            buffer = cek if isinstance(cek, bytearray) else bytearray(cek)
            self._entries[key] = _Entry(buffer, self._clock() + self._ttl)

    def get_or_load(
        self,
        provider_name: str,
        key_path: str,
        envelope: bytes,
        load: Callable[[], bytes],
    ) -> bytes:
        """The cached CEK, or `load()`'s result, cached only if `load` returned (never on error).

        `load` runs outside the lock, so a slow key store does not block other keys; two
        threads may then unwrap the same envelope once each, which is harmless.
        """
        cached = self.get(provider_name, key_path, envelope)
        log.key_unwrapped(provider_name, from_cache=cached is not None)
        if cached is not None:
            return cached
        cek = load()
        self.put(provider_name, key_path, envelope, bytes(cek))
        return bytes(cek)

    def get_or_load_checked(
        self,
        provider_name: str,
        key_path: str,
        envelope: bytes,
        load: Callable[[], bytes],
        check: Callable[[bytes], None],
        check_id: bytes,
        *,
        native: bool = False,
    ) -> ColumnKey:
        """Like ``get_or_load``, for a key that ``check`` must accept (it raises otherwise).

        ``check`` runs once per ``check_id`` on a cached key (a success is remembered with the
        entry; a failure never is), and on every call when caching is off. With ``native``, the
        result carries the entry's key loaded into the native codec, loaded on first request.
        """
        key = self.key(provider_name, key_path, envelope)
        recalled = self.recall(key, provider_name, check_id, native=native)
        if recalled is not None:
            return recalled
        cek = self.get_or_load(provider_name, key_path, envelope, load)
        check(cek)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not hmac.compare_digest(entry.cek, cek):
                # Not cached (TTL 0), or dropped meanwhile: nothing to remember it with.
                return ColumnKey(cek)
            entry.checks.add(check_id)
            return self._column_key_locked(entry, native)

    def recall(
        self, key: CacheKey, provider_name: str, check_id: bytes, *, native: bool = False
    ) -> ColumnKey | None:
        """The key cached under ``key`` (see ``key``) whose check ``check_id`` has passed, as
        ``get_or_load_checked`` returns it, or None; it never loads nor checks anything."""
        with self._lock:
            self._purge_locked()
            entry = self._entries.get(key)
            if entry is None or check_id not in entry.checks:
                return None
            result = self._column_key_locked(entry, native)
        log.key_unwrapped(provider_name, from_cache=True)
        return result

    @staticmethod
    def _column_key_locked(entry: _Entry, native: bool) -> ColumnKey:
        cek = bytes(entry.cek)
        if not native:
            return ColumnKey(cek)
        if entry.native is None:
            entry.native = _load_native(cek)
        return ColumnKey(cek, entry.native)

    def clear(self) -> None:
        """Drop and zero every entry (native keys wiped and freed)."""
        with self._lock:
            for entry in self._entries.values():
                _drop(entry)
            self._entries.clear()

    def __del__(self) -> None:
        # A cache dropped without clear() (a connection never closed) still wipes its keys and
        # gives back its native key slots; at interpreter exit there may be nothing left to do it.
        with contextlib.suppress(Exception):
            self.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge_locked()
            return len(self._entries)

    def _purge_locked(self) -> None:
        now = self._clock()
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            _drop(self._entries.pop(key))


def _drop(entry: _Entry) -> None:
    """Zero the entry's buffer and wipe and free its native key."""
    global _native_held
    entry.cek[:] = bytes(len(entry.cek))
    entry.checks.clear()
    native, entry.native = entry.native, None
    if native is not None:
        native.close()
        with _native_lock:
            _native_held -= 1


def _load_native(cek: bytes) -> CellKey | None:
    """The CEK loaded into the native codec, or None when cached keys already hold their share
    of the slots or loading fails (the codec then loads a key per call, as with TTL 0)."""
    global _native_held
    from enclave import binding  # the native module loads on first use, not on import
    from engine.errors import Error

    with _native_lock:
        if _native_held >= NATIVE_KEYS_MAX:
            return None
        try:
            native = binding.CellKey(cek)
        except Error:
            return None
        _native_held += 1
        return native

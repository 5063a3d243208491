"""A thread-safe, time-limited cache of unwrapped column encryption keys (CEKs).

Entries are keyed by (provider, key path, SHA-256 of the envelope) and expire after a TTL (two
hours by default; 0 disables caching). It must never cache a failure, and it zeroes the buffer of
every entry it drops. Python may still hold other copies of a key; this narrows, not closes, that.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine import log

__all__ = ["CekCache", "DEFAULT_TTL_SECONDS"]

DEFAULT_TTL_SECONDS = 2 * 60 * 60.0

CacheKey = tuple[str, str, bytes]


@dataclass
class _Entry:
    cek: bytearray
    expires_at: float


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
                _zero(old.cek)
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

    def clear(self) -> None:
        """Drop and zero every entry."""
        with self._lock:
            for entry in self._entries.values():
                _zero(entry.cek)
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge_locked()
            return len(self._entries)

    def _purge_locked(self) -> None:
        now = self._clock()
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            _zero(self._entries.pop(key).cek)


def _zero(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))

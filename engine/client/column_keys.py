"""The client's column key resolver: from a CEK's envelope(s) and CMK metadata to a plaintext CEK.

It applies the policy around the formats: trusted key paths (checked before any key store is
touched), the CEK cache, CMK rotation (two envelope values), and the rule that a CEK goes to an
enclave only under a CMK whose metadata signature verifies and allows enclave computations.
It must not parse envelopes or sign anything itself; that is cek_envelope and cmk_metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.hmac import HMAC

from engine.client.cek_cache import CacheKey, CekCache, ColumnKey
from engine.client.cmk_metadata import verify_cmk_metadata
from engine.client.keystores.pkcs11_uri import redact_pkcs11_uri
from engine.client.keystores.registry import KeyStoreRegistry
from engine.errors import CellAuthenticationError, DatabaseError, OperationalError

__all__ = ["ColumnKeyResolver", "cek_key_check", "verify_cek_key_check"]

_KEY_CHECK_LABEL = b"EnclaveSQL CEK check v1\x00"
# Successful CMK metadata verifications remembered per resolver; far more than any catalog holds,
# and the set starts over when full rather than growing without bound.
_VERIFIED_METADATA_MAX = 4096
_RECENT_MAX = 1024


def cek_key_check(cek: bytes, cek_name: str) -> bytes:
    """The key check that binds a plaintext CEK to its (case-insensitive) name.

    The host holds envelopes, not keys, so it cannot compute this for a key it swapped in.

    >>> check = cek_key_check(bytes(32), "CEK1")
    >>> check == cek_key_check(bytes(32), "cek1"), check == cek_key_check(bytes(32), "cek2")
    (True, False)
    """
    mac = HMAC(bytes(cek), hashes.SHA256())
    mac.update(_KEY_CHECK_LABEL + cek_name.casefold().encode("utf-8"))
    return mac.finalize()


def verify_cek_key_check(cek: bytes, cek_name: str, key_check: bytes | None) -> None:
    """Raise CellAuthenticationError unless ``key_check`` is the check of ``cek`` for the name.

    A missing check is refused too: every value created through EnclaveSQL carries one.

    >>> verify_cek_key_check(bytes(32), "cek1", cek_key_check(bytes(32), "cek1"))
    >>> verify_cek_key_check(bytes(32), "cek2", cek_key_check(bytes(32), "cek1"))
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    engine.errors.CellAuthenticationError: ...
    """
    if key_check is None or not hmac.compare_digest(cek_key_check(cek, cek_name), bytes(key_check)):
        raise CellAuthenticationError()


class ColumnKeyResolver:
    """Resolves CEKs through a provider registry, a cache and an optional trusted-path list.

    `trusted_key_paths`, when given, is the complete set of CMK key paths this client accepts
    (compared case-insensitively, like SqlClient's ColumnEncryptionTrustedMasterKeyPaths).

    >>> import tempfile
    >>> from engine.client.keystores import build_registry
    >>> registry = build_registry(key_directory=tempfile.mkdtemp())
    >>> registry.get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    >>> envelope = registry.get("PEM_FILE").wrap_cek("cmk.pem", bytes(32))
    >>> resolver = ColumnKeyResolver(registry, CekCache(), trusted_key_paths={"CMK.PEM"})
    >>> resolver.cek_for("PEM_FILE", "cmk.pem", envelope) == bytes(32)
    True
    """

    def __init__(
        self,
        registry: KeyStoreRegistry,
        cache: CekCache | None = None,
        trusted_key_paths: Iterable[str] | None = None,
    ) -> None:
        self._registry = registry
        self._cache = cache if cache is not None else CekCache()
        self._trusted = (
            None if trusted_key_paths is None else {path.casefold() for path in trusted_key_paths}
        )
        # Hashes of CMK metadata whose signature verified (see verify_enclave_cmk). Failures
        # are never added, so a tampered row is refused every time.
        self._verified_metadata: set[bytes] = set()
        self._verified_lock = threading.Lock()
        # Per (CEK name, native): the values last seen and where the one that worked is
        # cached (see column_key_checked). Never key bytes.
        self._recent: dict[tuple[str, bool], tuple[tuple[object, ...], CacheKey, str, bytes]] = {}

    def check_trusted(self, cmk_key_path: str, *, cmk_name: str | None = None) -> None:
        """Raise OperationalError when a trusted-path list is set and does not hold the path."""
        if self._trusted is None or cmk_key_path.casefold() in self._trusted:
            return
        named = f"column master key '{cmk_name}'" if cmk_name else "a column master key"
        raise OperationalError(
            f"{named} has KEY_PATH '{_safe_path(cmk_key_path)}', which is not in this "
            "connection's trusted_key_paths; add it there if you trust it"
        )

    def cek_for(
        self,
        cmk_provider: str,
        cmk_key_path: str,
        envelope: bytes,
        *,
        cmk_name: str | None = None,
    ) -> bytes:
        """The plaintext CEK inside `envelope`, verified and unwrapped by the CMK's provider."""
        self.check_trusted(cmk_key_path, cmk_name=cmk_name)
        provider = self._registry.get(cmk_provider)
        return self._cache.get_or_load(
            cmk_provider,
            cmk_key_path,
            envelope,
            lambda: provider.unwrap_cek(cmk_key_path, envelope),
        )

    def cek_for_any(
        self,
        values: Sequence[tuple[str, str, bytes]],
        *,
        cmk_name: str | None = None,
    ) -> bytes:
        """The CEK from the first of its values (provider, key path, envelope) that works.

        During CMK rotation a CEK has two values. Untrusted or unreachable ones are skipped.
        If none works: CellAuthenticationError if any envelope failed authentication (that
        points at tampering), else one OperationalError that lists why each value failed.
        """
        return _first_that_works(
            [partial(self.cek_for, *value, cmk_name=cmk_name) for value in values]
        )

    def cek_for_checked(
        self, cek_name: str, values: Sequence[tuple[str, str, bytes, bytes | None]]
    ) -> bytes:
        """Like ``cek_for_any``, for values (provider, key path, envelope, key check) of the
        CEK ``cek_name``: a value counts only if its key verifies against its key check.

        That catches another CEK's genuine envelope (same CMK, so it unwraps) put in this
        CEK's place by the host. A check that passed is remembered with the cached key (for
        that name and check only); a failure never is, so a swapped value fails every time.
        """
        return self.column_key_checked(cek_name, values, native=False).cek

    def column_key_checked(
        self,
        cek_name: str,
        values: Sequence[tuple[str, str, bytes, bytes | None]],
        *,
        native: bool = True,
    ) -> ColumnKey:
        """``cek_for_checked`` as a ColumnKey; with ``native`` it carries the cache's key
        loaded into the native codec, so the codec need not load it on every call.

        The value that worked last for the name is remembered (its cache key and check id,
        no key bytes): while the cache still holds that key with its check passed, the same
        values find it again without hashing envelopes or trying values in turn.
        """
        values = tuple(values)
        recent = self._recent.get((cek_name, native))
        if recent is not None and recent[0] == values:
            recalled = self._cache.recall(*recent[1:], native=native)
            if recalled is not None:
                return recalled

        def attempt(
            provider_name: str, key_path: str, envelope: bytes, check: bytes | None
        ) -> ColumnKey:
            if check is None:
                # Refuse before touching the key store: the value was not made by a client.
                raise CellAuthenticationError()
            self.check_trusted(key_path)
            provider = self._registry.get(provider_name)
            check_id = _check_id(cek_name, check)
            found = self._cache.get_or_load_checked(
                provider_name,
                key_path,
                envelope,
                lambda: provider.unwrap_cek(key_path, envelope),
                partial(_verify_check, cek_name, check),
                check_id,
                native=native,
            )
            if len(self._recent) >= _RECENT_MAX:
                self._recent.clear()
            cache_key = CekCache.key(provider_name, key_path, envelope)
            self._recent[(cek_name, native)] = (values, cache_key, provider_name, check_id)
            return found

        return _first_that_works([partial(attempt, *value) for value in values])

    def verify_enclave_cmk(
        self,
        cmk_provider: str,
        cmk_key_path: str,
        allow_enclave_computations: bool,
        signature: bytes | None,
        *,
        cmk_name: str | None = None,
    ) -> None:
        """Raise unless the CMK may release its CEKs to an enclave.

        That needs a trusted key path, ENCLAVE_COMPUTATIONS, and a metadata signature that
        verifies under the CMK itself; only then may a CEK go into an enclave package. A
        signature that verified is remembered, keyed by a hash of the CMK name, provider, key
        path, flag, signature and the CMK's current public key, so the RSA check runs once per
        metadata row and again whenever any of them changes; a failure is never remembered.
        """
        self.check_trusted(cmk_key_path, cmk_name=cmk_name)
        named = f"column master key '{cmk_name}'" if cmk_name else "the column master key"
        if not allow_enclave_computations:
            raise OperationalError(
                f"{named} does not allow enclave computations, so its keys are never sent to "
                "an enclave; recreate it WITH (... ENCLAVE_COMPUTATIONS (SIGNATURE = ...))"
            )
        if not signature:
            raise OperationalError(
                f"{named} allows enclave computations but carries no metadata signature; "
                "recreate it with ENCLAVE_COMPUTATIONS (SIGNATURE = ...)"
            )
        provider = self._registry.get(cmk_provider)
        remembered = _metadata_fingerprint(
            cmk_name or "",
            cmk_provider,
            cmk_key_path,
            allow_enclave_computations,
            bytes(signature),
            provider.public_key(cmk_key_path),
        )
        with self._verified_lock:
            if remembered in self._verified_metadata:
                return
        # The name the CMK was declared with is what was signed, whatever the provider calls
        # itself, so a custom provider registered under another name still verifies.
        verify_cmk_metadata(
            provider, cmk_provider, cmk_key_path, allow_enclave_computations, bytes(signature)
        )
        with self._verified_lock:
            if len(self._verified_metadata) >= _VERIFIED_METADATA_MAX:
                self._verified_metadata.clear()
            self._verified_metadata.add(remembered)

    def clear_cache(self) -> None:
        """Forget (and zero) every cached CEK, and every remembered metadata verification."""
        self._cache.clear()
        self._recent.clear()
        with self._verified_lock:
            self._verified_metadata.clear()


def _metadata_fingerprint(
    cmk_name: str,
    provider_name: str,
    key_path: str,
    allow_enclave_computations: bool,
    signature: bytes,
    public_key: rsa.RSAPublicKey,
) -> bytes:
    """SHA-256 over every input of a metadata verification, each length-prefixed so no two
    different rows can run together into the same bytes.

    >>> from cryptography.hazmat.primitives.asymmetric import rsa
    >>> key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    >>> a = _metadata_fingerprint("cmk", "PEM_FILE", "k.pem", True, b"sig", key)
    >>> a == _metadata_fingerprint("cmk", "PEM_FILE", "k.pem", True, b"sig", key)
    True
    >>> a == _metadata_fingerprint("cmk", "PEM_FILE", "k.pem", False, b"sig", key)
    False
    """
    public_der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(b"EnclaveSQL CMK metadata verified v1\x00")
    for part in (
        cmk_name.encode("utf-8"),
        provider_name.encode("utf-8"),
        key_path.encode("utf-8"),
        b"\x01" if allow_enclave_computations else b"\x00",
        signature,
        public_der,
    ):
        digest.update(struct.pack("<Q", len(part)))
        digest.update(part)
    return digest.digest()


def _verify_check(cek_name: str, key_check: bytes, cek: bytes) -> None:
    verify_cek_key_check(cek, cek_name, key_check)


def _check_id(cek_name: str, key_check: bytes) -> bytes:
    """What a passed key check is remembered by: the name as compared, and the check."""
    name = cek_name.casefold().encode("utf-8")
    return struct.pack("<Q", len(name)) + name + bytes(key_check)


_T = TypeVar("_T")


def _first_that_works(attempts: Sequence[Callable[[], _T]]) -> _T:
    """The result of the first attempt that returns (see ColumnKeyResolver.cek_for_any)."""
    if not attempts:
        raise OperationalError(
            "the column encryption key has no ENCRYPTED_VALUE; add one with ALTER COLUMN "
            "ENCRYPTION KEY ... ADD VALUE"
        )
    failures: list[DatabaseError] = []
    for attempt in attempts:
        try:
            return attempt()
        except (CellAuthenticationError, OperationalError) as error:
            failures.append(error)
    refused = [failure for failure in failures if isinstance(failure, CellAuthenticationError)]
    if refused:
        # The first refusal's own fixed message (an envelope's names the CMK as the fix).
        raise type(refused[0])() from None
    if len(failures) == 1:
        raise failures[0]
    reasons = "; ".join(
        f"value {number}: {failure}" for number, failure in enumerate(failures, start=1)
    )
    raise OperationalError(
        f"none of the {len(failures)} values of the column encryption key could be "
        f"decrypted: {reasons}"
    )


def _safe_path(key_path: str) -> str:
    # A pkcs11: key path may carry a pin-value; no message may show it.
    return redact_pkcs11_uri(key_path)

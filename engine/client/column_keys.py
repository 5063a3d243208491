"""The client's column key resolver: from a CEK's envelope(s) and CMK metadata to a plaintext CEK.

It applies the policy around the formats: trusted key paths (checked before any key store is
touched), the CEK cache, CMK rotation (two envelope values), and the rule that a CEK goes to an
enclave only under a CMK whose metadata signature verifies and allows enclave computations.
It must not parse envelopes or sign anything itself; that is cek_envelope and cmk_metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.client.cek_cache import CekCache
from engine.client.cmk_metadata import verify_cmk_metadata
from engine.client.keystores.pkcs11_uri import redact_pkcs11_uri
from engine.client.keystores.registry import KeyStoreRegistry
from engine.errors import CellAuthenticationError, DatabaseError, OperationalError

__all__ = ["ColumnKeyResolver"]


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
        if not values:
            raise OperationalError(
                "the column encryption key has no ENCRYPTED_VALUE; add one with ALTER COLUMN "
                "ENCRYPTION KEY ... ADD VALUE"
            )
        failures: list[DatabaseError] = []
        for provider_name, key_path, envelope in values:
            try:
                return self.cek_for(provider_name, key_path, envelope, cmk_name=cmk_name)
            except (CellAuthenticationError, OperationalError) as error:
                failures.append(error)
        if any(isinstance(failure, CellAuthenticationError) for failure in failures):
            raise CellAuthenticationError() from None
        if len(failures) == 1:
            raise failures[0]
        reasons = "; ".join(
            f"value {number}: {failure}" for number, failure in enumerate(failures, start=1)
        )
        raise OperationalError(
            f"none of the {len(failures)} values of the column encryption key could be "
            f"decrypted: {reasons}"
        )

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
        verifies under the CMK itself; only then may a CEK go into an enclave package.
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
        # The name the CMK was declared with is what was signed, whatever the provider calls
        # itself, so a custom provider registered under another name still verifies.
        verify_cmk_metadata(
            provider, cmk_provider, cmk_key_path, allow_enclave_computations, bytes(signature)
        )

    def clear_cache(self) -> None:
        """Forget (and zero) every cached CEK."""
        self._cache.clear()


def _safe_path(key_path: str) -> str:
    # A pkcs11: key path may carry a pin-value; no message may show it.
    return redact_pkcs11_uri(key_path)

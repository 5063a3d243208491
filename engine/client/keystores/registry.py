"""The per-connection map from KEY_STORE_PROVIDER_NAME to a provider instance.

It holds the built-in PEM_FILE and PKCS11 providers plus any custom ones a connection registers.
It must not perform key operations itself, and it never lets a custom provider shadow a built-in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from engine.client.keystores.base import KeyStoreProvider
from engine.client.keystores.pem_file import PasswordCallback, PemFileProvider
from engine.client.keystores.pkcs11_token import Pkcs11Provider
from engine.errors import InterfaceError, OperationalError

__all__ = ["KeyStoreRegistry", "build_registry", "BUILT_IN_PROVIDERS"]

BUILT_IN_PROVIDERS = ("PEM_FILE", "PKCS11")


class KeyStoreRegistry:
    """Provider lookup by name, case-insensitively.

    >>> registry = build_registry()
    >>> registry.get("pem_file").name
    'PEM_FILE'
    >>> registry.get("AZURE_KEY_VAULT")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: no key store provider named 'AZURE_KEY_VAULT' is ...
    """

    def __init__(self, providers: Mapping[str, KeyStoreProvider]) -> None:
        self._providers: dict[str, tuple[str, KeyStoreProvider]] = {}
        for name, provider in providers.items():
            if not isinstance(name, str) or not name.strip():
                raise InterfaceError("key store provider names must be non-empty strings")
            if not isinstance(provider, KeyStoreProvider):
                raise InterfaceError(
                    f"key store provider '{name}' must be an instance of "
                    "engine.client.keystores.KeyStoreProvider"
                )
            folded = name.casefold()
            if folded in self._providers:
                raise InterfaceError(f"key store provider '{name}' is registered twice")
            self._providers[folded] = (name, provider)

    def get(self, name: str) -> KeyStoreProvider:
        """The provider registered under `name` (any case); OperationalError if none."""
        entry = self._providers.get(name.casefold()) if isinstance(name, str) else None
        if entry is None:
            raise OperationalError(
                f"no key store provider named '{name}' is registered on this connection; "
                f"registered: {', '.join(self.names())}. Pass key_store_providers="
                "{'NAME': provider} to engine.connect to add one"
            )
        return entry[1]

    def names(self) -> list[str]:
        """The registered provider names, as they were registered."""
        return sorted(name for name, _provider in self._providers.values())

    def close(self) -> None:
        """Close every provider (drops cached keys and token sessions)."""
        for _name, provider in self._providers.values():
            provider.close()


def build_registry(
    custom: Mapping[str, KeyStoreProvider] | None = None,
    *,
    key_directory: str | os.PathLike[str] | None = None,
    pem_password_callback: PasswordCallback | None = None,
    pkcs11_allowed_modules: Iterable[str | os.PathLike[str]] = (),
) -> KeyStoreRegistry:
    """The built-in providers plus `custom` (from `engine.connect(key_store_providers=...)`).

    >>> build_registry().names()
    ['PEM_FILE', 'PKCS11']
    """
    providers: dict[str, KeyStoreProvider] = {
        "PEM_FILE": PemFileProvider(key_directory, pem_password_callback),
        "PKCS11": Pkcs11Provider(pkcs11_allowed_modules),
    }
    for name in custom or {}:
        if isinstance(name, str) and name.casefold() in {b.casefold() for b in BUILT_IN_PROVIDERS}:
            raise InterfaceError(
                f"key store provider name '{name}' is built in and cannot be replaced; register "
                "the custom provider under another name"
            )
    providers.update(custom or {})
    return KeyStoreRegistry(providers)

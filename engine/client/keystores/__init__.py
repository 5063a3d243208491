"""Key store providers: where column master keys live (PEM files, PKCS#11 tokens, custom stores).

This package re-exports the provider contract, the built-in providers and the registry. It must
not import python-pkcs11 at import time: the PKCS11 provider loads it on first use.
"""

from __future__ import annotations

from engine.client.keystores.base import KeyStoreProvider
from engine.client.keystores.pem_file import PemFileProvider
from engine.client.keystores.pkcs11_token import Pkcs11Provider
from engine.client.keystores.pkcs11_uri import Pkcs11Uri, parse_pkcs11_uri, redact_pkcs11_uri
from engine.client.keystores.registry import BUILT_IN_PROVIDERS, KeyStoreRegistry, build_registry

__all__ = [
    "BUILT_IN_PROVIDERS",
    "KeyStoreProvider",
    "KeyStoreRegistry",
    "PemFileProvider",
    "Pkcs11Provider",
    "Pkcs11Uri",
    "build_registry",
    "parse_pkcs11_uri",
    "redact_pkcs11_uri",
]

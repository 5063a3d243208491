"""Completes key DDL before the host sees it: a CEK value without ENCRYPTED_VALUE gets a fresh
32-byte key wrapped and signed by its CMK's provider, every CEK value gets its key check (the
CEK bound to its name), and an ENCLAVE_COMPUTATIONS CMK without SIGNATURE gets its metadata
signed. The host receives only envelopes, key checks and signatures.

It must not store keys or talk to the host; the plaintext CEK lives only inside this call.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from engine.client.cmk_metadata import sign_cmk_metadata
from engine.client.column_keys import ColumnKeyResolver, cek_key_check
from engine.client.keystores.registry import KeyStoreRegistry
from engine.errors import ProgrammingError
from engine.sql.catalog import CatalogSnapshot, ColumnEncryptionKeyValue, ColumnMasterKey
from engine.sql.plan import AddCekValue, CatalogChange, CreateCek, CreateCmk

__all__ = ["CEK_LENGTH", "complete_key_ddl"]

CEK_LENGTH = 32  # AEAD_AES_256_CBC_HMAC_SHA_256 root keys are 256 bits


def complete_key_ddl(
    changes: Sequence[CatalogChange],
    snapshot: CatalogSnapshot,
    registry: KeyStoreRegistry,
    resolver: ColumnKeyResolver,
    existing_cek: Callable[[str], bytes],
) -> tuple[CatalogChange, ...]:
    """``changes`` with every missing ENCRYPTED_VALUE and SIGNATURE filled in, and a key check
    on every CEK value (a given ENCRYPTED_VALUE is unwrapped to compute it).

    ``existing_cek(name)`` unwraps a CEK already in the catalog (for ADD VALUE without one).

    >>> import tempfile
    >>> from engine.client.keystores import build_registry
    >>> registry = build_registry(key_directory=tempfile.mkdtemp())
    >>> registry.get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    >>> cmk = CreateCmk("cmk1", "PEM_FILE", "cmk.pem", True, None)
    >>> done = complete_key_ddl([cmk], CatalogSnapshot(1), registry,
    ...                         ColumnKeyResolver(registry), lambda name: b"")
    >>> len(done[0].signature) > 0
    True
    """
    completed: list[CatalogChange] = []
    for change in changes:
        if isinstance(change, CreateCmk) and change.allow_enclave_computations:
            if change.signature is None:
                resolver.check_trusted(change.key_path, cmk_name=change.name)
                provider = registry.get(change.key_store_provider_name)
                signature = sign_cmk_metadata(
                    provider, change.key_store_provider_name, change.key_path, True
                )
                change = replace(change, signature=signature)
        elif isinstance(change, CreateCek):
            change = replace(
                change,
                values=_complete_values(change.name, change.values, snapshot, registry, resolver),
            )
        elif isinstance(change, AddCekValue):
            value = change.value
            cmk = snapshot.cmk(value.cmk_name)
            if value.encrypted_value is None:
                cek = existing_cek(change.cek_name)
                value = _wrap(value, cek, cmk, registry, resolver)
            else:
                # Both values of a CEK must wrap one key, else its check would vouch for two.
                cek = _unwrap(value.encrypted_value, cmk, resolver)
                if not hmac.compare_digest(cek, existing_cek(change.cek_name)):
                    raise ProgrammingError(
                        f"the ENCRYPTED_VALUE given for column encryption key {change.cek_name} "
                        f"under {cmk.name} wraps another key than its existing value; wrap the "
                        "existing key instead (enclavesql keys rewrap)"
                    )
            key_check = cek_key_check(cek, change.cek_name)
            change = replace(change, value=replace(value, key_check=key_check))
        completed.append(change)
    return tuple(completed)


def _complete_values(
    cek_name: str,
    values: tuple[ColumnEncryptionKeyValue, ...],
    snapshot: CatalogSnapshot,
    registry: KeyStoreRegistry,
    resolver: ColumnKeyResolver,
) -> tuple[ColumnEncryptionKeyValue, ...]:
    # Every value of one CEK must wrap the same key: reuse a given one, else make a new one.
    # A given value (pasted from another tool) is unwrapped here anyway, to compute its check;
    # a second given value that wraps another key fails that check when it is used.
    given = [v for v in values if v.encrypted_value is not None]
    if given:
        assert given[0].encrypted_value is not None
        cek = _unwrap(given[0].encrypted_value, snapshot.cmk(given[0].cmk_name), resolver)
    else:
        cek = os.urandom(CEK_LENGTH)
    key_check = cek_key_check(cek, cek_name)
    return tuple(
        replace(
            value
            if value.encrypted_value is not None
            else _wrap(value, cek, snapshot.cmk(value.cmk_name), registry, resolver),
            key_check=key_check,
        )
        for value in values
    )


def _unwrap(envelope: bytes, cmk: ColumnMasterKey, resolver: ColumnKeyResolver) -> bytes:
    return resolver.cek_for(cmk.key_store_provider_name, cmk.key_path, envelope, cmk_name=cmk.name)


def _wrap(
    value: ColumnEncryptionKeyValue,
    cek: bytes,
    cmk: ColumnMasterKey,
    registry: KeyStoreRegistry,
    resolver: ColumnKeyResolver,
) -> ColumnEncryptionKeyValue:
    resolver.check_trusted(cmk.key_path, cmk_name=cmk.name)
    envelope = registry.get(cmk.key_store_provider_name).wrap_cek(cmk.key_path, cek)
    return replace(value, encrypted_value=envelope)

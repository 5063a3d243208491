"""Completes key DDL before the host sees it: a CEK value without ENCRYPTED_VALUE gets a fresh
32-byte key wrapped and signed by its CMK's provider, and an ENCLAVE_COMPUTATIONS CMK without
SIGNATURE gets its metadata signed. The host receives only envelopes and signatures.

It must not store keys or talk to the host; the plaintext CEK lives only inside this call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from engine.client.cmk_metadata import sign_cmk_metadata
from engine.client.column_keys import ColumnKeyResolver
from engine.client.keystores.registry import KeyStoreRegistry
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
    """``changes`` with every missing ENCRYPTED_VALUE and SIGNATURE filled in.

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
                change, values=_complete_values(change.values, snapshot, registry, resolver)
            )
        elif isinstance(change, AddCekValue) and change.value.encrypted_value is None:
            cek = existing_cek(change.cek_name)
            change = replace(
                change,
                value=_wrap(
                    change.value, cek, snapshot.cmk(change.value.cmk_name), registry, resolver
                ),
            )
        completed.append(change)
    return tuple(completed)


def _complete_values(
    values: tuple[ColumnEncryptionKeyValue, ...],
    snapshot: CatalogSnapshot,
    registry: KeyStoreRegistry,
    resolver: ColumnKeyResolver,
) -> tuple[ColumnEncryptionKeyValue, ...]:
    if all(value.encrypted_value is not None for value in values):
        return values
    # Every value of one CEK must wrap the same key: reuse a given one, else make a new one.
    given = [v for v in values if v.encrypted_value is not None]
    if given:
        cmk = snapshot.cmk(given[0].cmk_name)
        assert given[0].encrypted_value is not None
        cek = resolver.cek_for(
            cmk.key_store_provider_name, cmk.key_path, given[0].encrypted_value, cmk_name=cmk.name
        )
    else:
        cek = os.urandom(CEK_LENGTH)
    return tuple(
        value
        if value.encrypted_value is not None
        else _wrap(value, cek, snapshot.cmk(value.cmk_name), registry, resolver)
        for value in values
    )


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

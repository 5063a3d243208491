"""The client's part of in-place encryption and key rotation: value transforms for the
client-streaming path, the enclave package for re-encryption, and the CMK rotation checks.

It works on plain data (Arrow arrays, catalog snapshots) and keys it resolves itself. It never
opens DuckDB and never calls the host; the connection hands it batches and passes results on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from engine.client.codec import decrypt_column, encrypt_column
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_authorization import reencrypt as reencrypt_grants
from engine.client.enclave_package import type_code_for
from engine.client.enclave_session import EnclaveSession
from engine.errors import OperationalError, ProgrammingError
from engine.sql.alter_column_encryption import ColumnEncryptionChange
from engine.sql.catalog import CatalogSnapshot
from engine.types import parse_sql_type

__all__ = [
    "EnclaveReencryption",
    "check_cmk_rotation",
    "client_transform",
    "enclave_reencryption",
    "enclave_refusal",
]

KeyFor = Callable[[str], bytes]
_MODES = {"DETERMINISTIC": 1, "RANDOMIZED": 2}


def client_transform(
    change: ColumnEncryptionChange, key_for: KeyFor
) -> Callable[[pa.Array], pa.Array]:
    """A function from one batch of the column's current values to its new values.

    The keys are unwrapped now, so a missing or untrusted key fails before any row is read.

    >>> import os
    >>> from engine.sql.plan import EncryptionTarget
    >>> old, new = os.urandom(32), os.urandom(32)
    >>> source = EncryptionTarget("t", "c", "old", "DETERMINISTIC", "INT")
    >>> target = EncryptionTarget("t", "c", "new", "RANDOMIZED", "INT")
    >>> change = ColumnEncryptionChange("t", "c", source, "INT", target, "INT", "BLOB", None,
    ...                                 (), 1)
    >>> step = client_transform(change, {"old": old, "new": new}.__getitem__)
    >>> cells = step(encrypt_column([7, None], old, "DETERMINISTIC", "INT"))
    >>> decrypt_column(cells, new, "INT").to_pylist()
    [7, None]
    """
    label = change.label
    source_key = key_for(change.source.cek_name) if change.source is not None else None
    target_key = key_for(change.target.cek_name) if change.target is not None else None

    def transform(values: pa.Array | pa.ChunkedArray) -> pa.Array:
        if change.source is not None:
            assert source_key is not None
            values = decrypt_column(values, source_key, change.source.declared_type, column=label)
        if change.target is None:
            return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        assert target_key is not None
        return encrypt_column(
            values,
            target_key,
            change.target.encryption_type,
            change.target.declared_type,
            column=label,
        )

    return transform


@dataclass(frozen=True)
class EnclaveReencryption:
    """What the host needs to re-encrypt a column in the enclave: the sealed package for
    ``statement_text``, and the arguments of each REENCRYPT call. Holds no key."""

    statement_text: str
    package: bytes
    source_cek_id: int
    type_code: int
    constant: bytes


def enclave_refusal(change: ColumnEncryptionChange, snapshot: CatalogSnapshot) -> str | None:
    """Why the enclave cannot run ``change``, or None when it can (catalog facts only; the
    signatures are checked when the package is built)."""
    if change.source is None or change.target is None:
        return (
            f"{change.label}: the enclave only re-encrypts; "
            f"{'encryption of plaintext' if change.source is None else 'decryption'} "
            "runs on the client"
        )
    for cek in change.required_keys:
        if not snapshot.enclave_enabled(cek):
            return (
                f"{change.label}: column encryption key {cek} is not enclave-enabled (every "
                "column master key that wraps it needs ENCLAVE_COMPUTATIONS)"
            )
    source_form = parse_sql_type(change.source.declared_type).form
    if parse_sql_type(change.target.declared_type).form != source_form:
        return (
            f"{change.label}: the enclave re-encrypts values unchanged, but "
            f"{change.source.declared_type} and {change.target.declared_type} are stored "
            "differently; change the type on the client path"
        )
    return None


def enclave_reencryption(
    change: ColumnEncryptionChange,
    snapshot: CatalogSnapshot,
    session: EnclaveSession,
    resolver: ColumnKeyResolver,
    key_for: KeyFor,
    statement_text: str,
) -> EnclaveReencryption:
    """Admit both keys to ``session`` (every CMK's enclave signature must verify) and build
    the package that allows exactly this re-encryption. Raises before anything is sent."""
    reason = enclave_refusal(change, snapshot)
    if reason is not None:
        raise ProgrammingError(reason)
    assert change.source is not None and change.target is not None
    for cek_name in change.required_keys:
        for value in snapshot.cek(cek_name).values:
            cmk = snapshot.cmk(value.cmk_name)
            session.verify_cek(
                cek_name,
                resolver,
                cmk_provider=cmk.key_store_provider_name,
                cmk_key_path=cmk.key_path,
                allow_enclave_computations=cmk.allow_enclave_computations,
                signature=cmk.signature,
                cmk_name=cmk.name,
            )
    type_code = type_code_for(parse_sql_type(change.source.declared_type).form)
    target_id = session.cek_id(change.target.cek_name)
    mode = _MODES[change.target.encryption_type]
    grants = reencrypt_grants(
        change.source.cek_name, change.target.cek_name, target_id, type_code, mode
    )
    keys = {name: key_for(name) for name in change.required_keys}
    package = session.package_for(statement_text, keys, grants)
    return EnclaveReencryption(
        statement_text=statement_text,
        package=package,
        source_cek_id=session.cek_id(change.source.cek_name),
        type_code=int(type_code),
        constant=grants[0].constant,
    )


def check_cmk_rotation(
    snapshot: CatalogSnapshot, cek_name: str, new_cmk_name: str, resolver: ColumnKeyResolver
) -> None:
    """Refuse a CMK rotation before anything changes: the new CMK must exist and differ from
    the CEK's current ones, and when it allows enclave computations its metadata signature
    must verify (CellAuthenticationError otherwise).

    >>> check_cmk_rotation(CatalogSnapshot(1), "cek1", "cmk2", None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: unknown column encryption key cek1
    """
    cek = snapshot.cek(cek_name)
    cmk = snapshot.cmk(new_cmk_name)
    if any(v.cmk_name.casefold() == cmk.name.casefold() for v in cek.values):
        raise ProgrammingError(
            f"column encryption key {cek.name} already has a value under column master key "
            f"{cmk.name}; rotate to another column master key"
        )
    if len(cek.values) >= 2:
        raise OperationalError(
            f"column encryption key {cek.name} is in the middle of a rotation (it has 2 "
            "values); finish it with ALTER COLUMN ENCRYPTION KEY ... DROP VALUE first"
        )
    if cmk.allow_enclave_computations:
        resolver.verify_enclave_cmk(
            cmk.key_store_provider_name,
            cmk.key_path,
            True,
            cmk.signature,
            cmk_name=cmk.name,
        )

"""The client's part of in-place encryption and key rotation: value transforms for the
client-streaming path, the enclave packages for re-encryption and for encryption of a plaintext
column, and the CMK rotation checks.

It works on plain data (Arrow arrays, catalog snapshots) and keys it resolves itself. It never
opens DuckDB and never calls the host; the connection hands it batches and passes results on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from engine.client.codec import decrypt_column, encrypt_column
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_authorization import encrypt as encrypt_grant
from engine.client.enclave_authorization import reencrypt as reencrypt_grants
from engine.client.enclave_package import type_code_for
from engine.client.enclave_queries import admit_cek
from engine.client.enclave_session import EnclaveSession
from engine.errors import OperationalError, ProgrammingError
from engine.sql.alter_column_encryption import ColumnEncryptionChange
from engine.sql.catalog import CatalogSnapshot
from engine.types import parse_sql_type

__all__ = [
    "EnclaveEncryption",
    "EnclaveReencryption",
    "check_cmk_rotation",
    "client_transform",
    "enclave_encryption",
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


@dataclass(frozen=True)
class EnclaveEncryption:
    """What the host needs to encrypt a plaintext column in the enclave: the sealed package for
    ``statement_text``, and the arguments of each ENCRYPT call. Holds no key.

    The host normalizes the values itself (``engine.normalization``) with ``declared_type``,
    the type the client put into the grant as ``type_code``."""

    statement_text: str
    package: bytes
    cek_id: int
    type_code: int
    constant: bytes
    declared_type: str


def enclave_refusal(change: ColumnEncryptionChange, snapshot: CatalogSnapshot) -> str | None:
    """Why the enclave cannot run ``change``, or None when it can (catalog facts only; the
    signatures are checked when the package is built).

    The enclave re-encrypts, and encrypts a plaintext column; it never returns plaintext, so
    decryption always runs on the client.

    >>> from engine.sql.plan import EncryptionTarget
    >>> source = EncryptionTarget("t", "c", "k", "DETERMINISTIC", "INT")
    >>> change = ColumnEncryptionChange("t", "c", source, "INT", None, "INT", "INTEGER", None,
    ...                                 (), 1)
    >>> enclave_refusal(change, CatalogSnapshot(1))
    't.c: the enclave only re-encrypts or encrypts; decryption runs on the client'
    """
    if change.target is None:
        return (
            f"{change.label}: the enclave only re-encrypts or encrypts; decryption runs on the "
            "client"
        )
    for cek in change.required_keys:
        if not snapshot.enclave_enabled(cek):
            return (
                f"{change.label}: column encryption key {cek} is not enclave-enabled (every "
                "column master key that wraps it needs ENCLAVE_COMPUTATIONS)"
            )
    if change.source is None:
        return None
    source_form = parse_sql_type(change.source.declared_type).form
    if parse_sql_type(change.target.declared_type).form != source_form:
        return (
            f"{change.label}: the enclave re-encrypts values unchanged, but "
            f"{change.source.declared_type} and {change.target.declared_type} are stored "
            "differently; change the type on the client path"
        )
    return None


def _admit_keys(
    change: ColumnEncryptionChange,
    snapshot: CatalogSnapshot,
    session: EnclaveSession,
    resolver: ColumnKeyResolver,
) -> None:
    """Admit every key of ``change`` to the session; each CMK's enclave signature must verify."""
    for cek_name in change.required_keys:
        admit_cek(session, cek_name, snapshot, resolver)


def enclave_encryption(
    change: ColumnEncryptionChange,
    snapshot: CatalogSnapshot,
    session: EnclaveSession,
    resolver: ColumnKeyResolver,
    key_for: KeyFor,
    statement_text: str,
) -> EnclaveEncryption:
    """Admit the target key to ``session`` (every CMK's enclave signature must verify) and
    build the package that allows exactly this encryption: ENCRYPT under the target key, for
    the target's type code and encryption type. Raises before anything is sent."""
    reason = enclave_refusal(change, snapshot)
    if reason is not None:
        raise ProgrammingError(reason)
    if change.source is not None or change.target is None:
        raise ProgrammingError(f"{change.label} is already encrypted; use enclave_reencryption")
    target = change.target
    _admit_keys(change, snapshot, session, resolver)
    type_code = type_code_for(parse_sql_type(target.declared_type).form)
    grant = encrypt_grant(target.cek_name, type_code, _MODES[target.encryption_type])
    package = session.package_for(
        statement_text, {target.cek_name: key_for(target.cek_name)}, [grant]
    )
    return EnclaveEncryption(
        statement_text=statement_text,
        package=package,
        cek_id=session.cek_id(target.cek_name),
        type_code=int(type_code),
        constant=grant.constant,
        declared_type=target.declared_type,
    )


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
    if change.source is None or change.target is None:
        raise ProgrammingError(f"{change.label} is not encrypted yet; use enclave_encryption")
    _admit_keys(change, snapshot, session, resolver)
    type_code = type_code_for(parse_sql_type(change.source.declared_type).form)
    source_id = session.cek_id(change.source.cek_name)
    target_id = session.cek_id(change.target.cek_name)
    mode = _MODES[change.target.encryption_type]
    # REENCRYPT on the source and REENCRYPT_TARGET on the target only: no ENCRYPT grant, so the
    # host holding this package cannot encrypt plaintexts of its choice under the target key.
    grants = reencrypt_grants(
        change.source.cek_name,
        change.target.cek_name,
        target_id,
        type_code,
        mode,
        source_cek_id=source_id,
    )
    keys = {name: key_for(name) for name in change.required_keys}
    package = session.package_for(statement_text, keys, grants)
    return EnclaveReencryption(
        statement_text=statement_text,
        package=package,
        source_cek_id=source_id,
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

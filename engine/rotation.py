"""In-place encryption, decryption and key rotation of columns: ALTER TABLE … ALTER COLUMN,
CEK rotation and CMK rotation, each atomic (one DuckDB transaction with the catalog change).

It picks the path (client streaming, or encryption and re-encryption in the enclave), joins
the client's transform or enclave package to the host's column rewrite, and reports which path
ran. Like the Connection, it does no cryptography and never queries DuckDB itself.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from engine.errors import OperationalError, ProgrammingError
from engine.sql.alter_column_encryption import (
    ChangeKind,
    ColumnEncryptionChange,
    describe_alter_column_encryption_sql,
)
from engine.sql.plan import EncryptionTarget, RegisterEncryptedColumn

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.client.enclave_session import EnclaveSession
    from engine.client.rotation import EnclaveEncryption
    from engine.connection import Connection
    from engine.host.enclave_gateway import EnclaveGateway

__all__ = [
    "AlterColumnResult",
    "EnclaveContext",
    "PlaintextColumnWarning",
    "alter_column_encryption",
    "open_enclave",
    "rotate_cek",
    "rotate_cmk",
    "run_column_change",
]

Path = Literal["auto", "client", "enclave"]
BATCH_ROWS = 262_144
PROGRESS_THRESHOLD_ROWS = 1_000_000
_log = logging.getLogger("enclavesql.rotation")


class PlaintextColumnWarning(UserWarning):
    """An encrypted column was decrypted in place and is now stored as plaintext."""


@dataclass(frozen=True)
class EnclaveContext:
    """An attested enclave session (client side) and the host's gateway to the same enclave."""

    session: EnclaveSession
    gateway: EnclaveGateway


@dataclass(frozen=True)
class AlterColumnResult:
    """What an in-place change did: which column, what kind, which path ran, how many rows."""

    table: str
    column: str
    kind: ChangeKind
    path: Literal["client", "enclave"]
    rows: int

    def __str__(self) -> str:
        where = "in the enclave" if self.path == "enclave" else "by streaming through the client"
        return f"{self.kind} {self.table}.{self.column}: {self.rows} row(s), {where}"


def open_enclave(
    protocol: str,
    platform_dir: str | None = None,
    *,
    attestation_url: str | None = None,
    expected_measurements: list[str] | None = None,
) -> EnclaveContext:
    """Open an enclave session through the local gateway, for the enclave path of a rotation.

    ``protocol="none"`` skips attestation (development only; it warns). Close it with
    ``context.session.close()``.
    """
    import tempfile

    from engine.client.enclave_session import EnclaveSession
    from engine.host.enclave_gateway import EnclaveGateway

    gateway = EnclaveGateway()
    session = EnclaveSession.establish(
        gateway,
        protocol=protocol,
        platform_dir=platform_dir or tempfile.mkdtemp(prefix="enclavesql-platform-"),
        attestation_url=attestation_url,
        expected_measurements=expected_measurements,
    )
    return EnclaveContext(session, gateway)


def alter_column_encryption(
    connection: Connection,
    sql: str,
    *,
    allow_decryption: bool = False,
    path: Path = "auto",
    enclave: EnclaveContext | None = None,
    progress: bool | Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> AlterColumnResult:
    """Run one ``ALTER TABLE t ALTER COLUMN c <type> [ENCRYPTED WITH (…)]`` in place.

    Plaintext to encrypted, and encrypted to another key or type, run in the enclave when
    there is one (``enclave``, or the connection's own session when it was opened with
    attestation_protocol) and every key involved is enclave-enabled (``path="auto"``), else on
    the client. ``path="enclave"`` refuses rather than fall back; ``path="client"`` always
    streams. Encrypted to plaintext always runs on the client, needs ``allow_decryption=True``
    and warns.

    >>> import tempfile, engine
    >>> from engine.client.keystores import build_registry
    >>> keys = tempfile.mkdtemp()
    >>> build_registry(key_directory=keys).get("PEM_FILE").generate_key("k.pem", key_size=2048)
    >>> con = engine.connect(":memory:", key_dir=keys)
    >>> _ = con.execute("CREATE COLUMN MASTER KEY m WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    ...                 "KEY_PATH = 'k.pem')")
    >>> _ = con.execute("CREATE COLUMN ENCRYPTION KEY c WITH VALUES (COLUMN_MASTER_KEY = m, "
    ...                 "ALGORITHM = 'RSA_OAEP')")
    >>> _ = con.execute("CREATE TABLE t AS SELECT 42 AS v")
    >>> print(alter_column_encryption(con, "ALTER TABLE t ALTER COLUMN v INT ENCRYPTED WITH ("
    ...     "COLUMN_ENCRYPTION_KEY = c, ENCRYPTION_TYPE = RANDOMIZED, "
    ...     "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')", progress=False))
    encrypt t.v: 1 row(s), by streaming through the client
    >>> con.execute("SELECT v FROM t").fetchall()
    [(42,)]
    >>> con.close()
    """
    connection._check_open()
    snapshot = connection._current_snapshot()
    change = describe_alter_column_encryption_sql(sql, snapshot)
    if change is None:
        raise ProgrammingError(
            "alter_column_encryption takes ALTER TABLE t ALTER COLUMN c <type> [ENCRYPTED WITH "
            "(...)] on an encrypted column, or with ENCRYPTED WITH on a plaintext one"
        )
    return run_column_change(
        connection,
        change,
        sql,
        allow_decryption=allow_decryption,
        path=path,
        enclave=enclave,
        progress=progress,
        batch_rows=batch_rows,
    )


def run_column_change(
    connection: Connection,
    change: ColumnEncryptionChange,
    statement_text: str,
    *,
    allow_decryption: bool = False,
    path: Path = "auto",
    enclave: EnclaveContext | None = None,
    progress: bool | Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> AlterColumnResult:
    """Execute a described change atomically; the lower-level form of alter_column_encryption."""
    from engine.client.rotation import (
        client_transform,
        enclave_encryption,
        enclave_reencryption,
        enclave_refusal,
    )

    if path not in ("auto", "client", "enclave"):
        raise ProgrammingError(f"path must be 'auto', 'client' or 'enclave', not {path!r}")
    if batch_rows < 1:
        raise ProgrammingError("batch_rows must be at least 1")
    client = connection._client
    if not client.column_encryption:
        raise ProgrammingError(
            f"ALTER COLUMN on {change.label} needs the column keys; connect with "
            "column_encryption=True"
        )
    if change.kind == "decrypt" and not allow_decryption:
        raise ProgrammingError(
            f"ALTER COLUMN would store {change.label} as plaintext; if that is what you want, "
            "run it with Connection.alter_column_encryption(sql, allow_decryption=True)"
        )
    snapshot = connection._current_snapshot()
    if snapshot.version != change.catalog_version:
        raise OperationalError("the catalog changed after the statement was described; retry")
    refusal = enclave_refusal(change, snapshot)
    if enclave is None and refusal is None and path != "client":
        enclave = _connection_enclave(connection)
    chosen: Literal["client", "enclave"] = "client"
    if path == "enclave":
        if refusal is not None:
            raise ProgrammingError(f"the enclave path was required, but {refusal}")
        if enclave is None:
            raise OperationalError(
                f"the enclave path was required for {change.label}, but this connection has no "
                "enclave session; connect with attestation_protocol set"
            )
        chosen = "enclave"
    elif path == "auto" and refusal is None and enclave is not None:
        chosen = "enclave"
    key_for = client.key_lookup(snapshot)
    host = connection._host
    bar = _progress_bar(change, chosen, progress)
    try:
        if chosen == "client":
            transform = client_transform(change, key_for)
            rows = host.rewrite_column(
                change, transform, batch_rows=batch_rows, progress=bar.update
            )
        elif change.kind == "encrypt":
            assert enclave is not None
            rows = _encrypt_in_enclave(
                connection,
                change,
                enclave_encryption(
                    change, snapshot, enclave.session, client.resolver, key_for, statement_text
                ),
                enclave,
                batch_rows,
                bar.update,
            )
        else:
            assert enclave is not None
            job = enclave_reencryption(
                change, snapshot, enclave.session, client.resolver, key_for, statement_text
            )
            gateway = enclave.gateway
            with gateway.query(enclave.session.session_id, job.package, job.statement_text) as qid:

                def transform(cells: pa.Array) -> pa.Array:
                    return gateway.reencrypt(
                        qid, job.source_cek_id, job.type_code, job.constant, cells
                    )

                rows = host.rewrite_column(
                    change, transform, batch_rows=batch_rows, progress=bar.update
                )
    finally:
        bar.close()
    if change.kind == "decrypt":
        warnings.warn(
            f"{change.label} was decrypted and is now stored as plaintext in the database file",
            PlaintextColumnWarning,
            stacklevel=3,
        )
    result = AlterColumnResult(change.table, change.column, change.kind, chosen, rows)
    _log.info("%s", result)
    return result


def _encrypt_in_enclave(
    connection: Connection,
    change: ColumnEncryptionChange,
    job: EnclaveEncryption,
    enclave: EnclaveContext,
    batch_rows: int,
    progress: Callable[[int], None],
) -> int:
    """Plaintext to encrypted in the enclave: the host reads and normalizes the plaintext it
    already stores, the enclave encrypts it under the key the client sealed into ``job``."""
    from engine.host.column_rewrite import enclave_encryption_transform

    gateway = enclave.gateway
    with gateway.query(enclave.session.session_id, job.package, job.statement_text) as qid:
        transform = enclave_encryption_transform(
            gateway,
            qid,
            cek_id=job.cek_id,
            type_code=job.type_code,
            constant=job.constant,
            declared_type=job.declared_type,
            column=change.label,
        )
        return connection._host.rewrite_column(
            change, transform, batch_rows=batch_rows, progress=progress
        )


def _connection_enclave(connection: Connection) -> EnclaveContext | None:
    """The connection's own enclave session (opened, and attested, on first use) when it was
    opened with attestation_protocol and the native enclave is built; else None."""
    if not connection.enclave_available:
        return None
    session = connection._enclave_session()
    return EnclaveContext(session, connection._host.enclave_gateway())


class _Progress:
    def __init__(self, bar: Any, callback: Callable[[int], None] | None) -> None:
        self._bar = bar
        self._callback = callback

    def update(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.update(rows)
        if self._callback is not None:
            self._callback(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _progress_bar(
    change: ColumnEncryptionChange,
    path: str,
    progress: bool | Callable[[int], None] | None,
) -> _Progress:
    if callable(progress):
        return _Progress(None, progress)
    show = bool(progress) if progress is not None else sys.stderr.isatty()
    if not show:
        return _Progress(None, None)
    from tqdm import tqdm

    return _Progress(tqdm(unit="rows", desc=f"{change.kind} {change.label} ({path})"), None)


def rotate_cek(
    connection: Connection,
    table: str,
    column: str,
    new_cek: str,
    *,
    path: Path = "auto",
    encryption_type: str | None = None,
    enclave: EnclaveContext | None = None,
    progress: bool | Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> AlterColumnResult:
    """Re-encrypt ``table.column`` under ``new_cek``, keeping its declared type and (unless
    ``encryption_type`` says otherwise) its encryption type."""
    snapshot = connection._current_snapshot()
    info = snapshot.table(table)
    current = info.column(column)
    if current.encryption is None:
        raise ProgrammingError(
            f"{info.name}.{current.name} is not encrypted; encrypt it with ALTER TABLE … ALTER "
            "COLUMN … ENCRYPTED WITH (…)"
        )
    cek = snapshot.cek(new_cek)
    kind = (encryption_type or current.encryption.encryption_type).upper()
    if kind not in ("DETERMINISTIC", "RANDOMIZED"):
        raise ProgrammingError("encryption_type must be DETERMINISTIC or RANDOMIZED")
    source = EncryptionTarget(
        info.name,
        current.name,
        current.encryption.cek_name,
        current.encryption.encryption_type,
        current.declared_type,
    )
    target = EncryptionTarget(info.name, current.name, cek.name, kind, current.declared_type)  # type: ignore[arg-type]
    change = ColumnEncryptionChange(
        table=info.name,
        column=current.name,
        source=source,
        source_type=current.declared_type,
        target=target,
        target_type=current.declared_type,
        storage_type="BLOB",
        read_type=None,
        catalog_changes=(
            RegisterEncryptedColumn(
                info.name,
                current.name,
                current.declared_type,
                cek.name,
                kind,  # type: ignore[arg-type]
                current.encryption.algorithm,
            ),
        ),
        catalog_version=snapshot.version,
    )
    text = (
        f"ALTER TABLE {_ident(info.name)} ALTER COLUMN {_ident(current.name)} "
        f"{current.declared_type} ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {_ident(cek.name)}, "
        f"ENCRYPTION_TYPE = {kind}, ALGORITHM = '{current.encryption.algorithm}')"
    )
    return run_column_change(
        connection,
        change,
        text,
        path=path,
        enclave=enclave,
        progress=progress,
        batch_rows=batch_rows,
    )


def rotate_cmk(
    connection: Connection, cek_name: str, new_cmk_name: str, *, drop_old: bool = True
) -> tuple[str, ...]:
    """Rotate the CMK of ``cek_name`` to ``new_cmk_name``: add a value wrapped under the new
    CMK, check that it unwraps to the same CEK, then (with ``drop_old``) drop the old value.
    It runs in one transaction and returns the statements it ran (no key bytes in them)."""
    from engine.client.rotation import check_cmk_rotation

    connection._check_open()
    snapshot = connection._current_snapshot()
    check_cmk_rotation(snapshot, cek_name, new_cmk_name, connection._client.resolver)
    cek = snapshot.cek(cek_name)
    new = snapshot.cmk(new_cmk_name)
    old_values = [value.cmk_name for value in cek.values]
    statements = [
        f"ALTER COLUMN ENCRYPTION KEY {_ident(cek.name)} ADD VALUE "
        f"(COLUMN_MASTER_KEY = {_ident(new.name)}, ALGORITHM = 'RSA_OAEP')"
    ]
    if drop_old:
        statements += [
            f"ALTER COLUMN ENCRYPTION KEY {_ident(cek.name)} DROP VALUE "
            f"(COLUMN_MASTER_KEY = {_ident(name)})"
            for name in old_values
        ]
    own = not _in_transaction(connection)
    if own:
        connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(statements[0])
        _check_new_value(connection, cek.name, new.name)
        for statement in statements[1:]:
            connection.execute(statement)
        if own:
            connection.commit()
    except BaseException:
        if own:
            connection.rollback()
        raise
    return tuple(statements)


def _check_new_value(connection: Connection, cek_name: str, cmk_name: str) -> None:
    """The value just added must unwrap, under the new CMK alone, to the key in use."""
    snapshot = connection._current_snapshot()
    client = connection._client
    cmk = snapshot.cmk(cmk_name)
    envelopes = {v.cmk_name.casefold(): v for v in snapshot.cek(cek_name).values}
    value = envelopes[cmk.name.casefold()]
    assert value.encrypted_value is not None
    fresh = client.resolver.cek_for(
        cmk.key_store_provider_name, cmk.key_path, value.encrypted_value, cmk_name=cmk.name
    )
    if fresh != client.key_lookup(snapshot)(cek_name):
        raise OperationalError(
            f"the value of column encryption key {cek_name} under {cmk_name} does not unwrap to "
            "the key in use; nothing was changed"
        )


def _in_transaction(connection: Connection) -> bool:
    rows = connection.execute("SELECT txid_current() AS a").fetchall()
    again = connection.execute("SELECT txid_current() AS a").fetchall()
    return bool(rows == again)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

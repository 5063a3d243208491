"""The PEP 249 Connection: joins one Client (keys, encryption) to one Host (DuckDB, catalog)
through a narrow interface that passes only plain data (SQL text, Plans, Arrow, bytes).

It orders the steps of the query path (snapshot, client describe, host describe, encrypt,
execute, decrypt) and owns transactions and bulk insert. It must not do cryptography or query
DuckDB itself, so that the host can later move to another process unchanged.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine import errors
from engine.cursor import Cursor
from engine.errors import InterfaceError, ProgrammingError

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.client.client import Client, PreparedStatement
    from engine.client.keystores.base import KeyStoreProvider
    from engine.client.small_results import SmallResult
    from engine.rotation import AlterColumnResult, EnclaveContext
    from engine.sql.catalog import CatalogSnapshot, TableInfo
    from engine.sql.plan import CatalogChange, Plan

__all__ = ["ATTESTATION_PROTOCOLS", "Connection", "HostInterface", "StatementResult", "connect"]

ATTESTATION_PROTOCOLS = (None, "none", "service")
BULK_BATCH_ROWS = 65_536
# A load this large shows a progress bar by itself when stderr is a terminal.
PROGRESS_THRESHOLD_ROWS = 1_000_000
# Statements that may be an in-place ALTER COLUMN (engine.rotation checks them properly).
_ALTER_COLUMN = re.compile(r"\bALTER\s+TABLE\b.*\bALTER\s+COLUMN\b", re.IGNORECASE | re.DOTALL)


class HostInterface(Protocol):
    """Everything the Connection asks of a host; each argument and result is plain data."""

    def catalog_version(self) -> int: ...
    def catalog_snapshot(self) -> CatalogSnapshot: ...
    def describe(self, sql: str) -> Plan: ...
    def execute(
        self, plan: Plan, parameters: Sequence[object] = (), enclave: Any = None
    ) -> Any: ...
    def execute_many(self, plan: Plan, parameters: Any) -> int: ...
    def apply_key_ddl(self, plan: Plan, changes: Sequence[CatalogChange]) -> None: ...
    def append_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader) -> int: ...
    def rewrite_column(
        self, change: Any, transform: Any, *, batch_rows: int = ..., progress: Any = ...
    ) -> int: ...
    def enable_enclave(self) -> bool: ...
    def enclave_gateway(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class StatementResult:
    """What a cursor keeps of a statement: plaintext rows (or None), type codes, row count,
    and for each column whether it came from an encrypted column."""

    table: pa.Table | None
    type_codes: tuple[str, ...]
    rowcount: int
    encrypted: tuple[bool, ...] = ()
    small: SmallResult | None = None  # a small result's rows, in place of ``table``


class Connection:
    """A PEP 249 connection. Create it with ``engine.connect``.

    Used as a context manager it commits when the block succeeds, rolls back when it raises,
    and closes the connection either way (as psycopg 3 does).
    """

    Warning = errors.Warning
    Error = errors.Error
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(
        self,
        host: HostInterface,
        client: Client,
        *,
        attestation_protocol: str | None = None,
        attestation_url: str | None = None,
        enclave_measurements: Iterable[str] | None = None,
    ) -> None:
        self._host = host
        self._client = client
        self.attestation_protocol = attestation_protocol
        self.attestation_url = attestation_url
        self.enclave_measurements = (
            tuple(enclave_measurements) if enclave_measurements is not None else None
        )
        self._snapshot: CatalogSnapshot | None = None
        self._closed = False
        # The enclave is loaded now; the session is only opened (and attested) by the first
        # statement that needs it, so connections that never use it pay nothing.
        self._enclave = attestation_protocol is not None and host.enable_enclave()

    # PEP 249.

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def column_encryption(self) -> bool:
        return self._client.column_encryption

    @property
    def enclave_available(self) -> bool:
        """Whether enclave computations can run: attestation_protocol is set and the native
        enclave is built. The session itself opens on the first statement that needs it."""
        return self._enclave

    def attestation_summary(self) -> Any:
        """The AttestationSummary of this connection's enclave session, or None before the
        first enclave statement (and without attestation_protocol)."""
        session = self._client.current_enclave_session
        return session.attestation_summary() if session is not None else None

    def _enclave_session(self) -> Any:
        from enclave.attestation.platform import default_platform_dir

        assert self.attestation_protocol is not None
        return self._client.enclave_session(
            self._host.enclave_gateway(),
            protocol=self.attestation_protocol,
            platform_dir=default_platform_dir(),
            attestation_url=self.attestation_url,
            expected_measurements=self.enclave_measurements,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed; open a new one with engine.connect()")

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def execute(self, operation: str, parameters: Sequence[object] | None = None) -> Cursor:
        """A new cursor that has run ``operation`` (a shortcut, as in sqlite3 and DuckDB)."""
        return self.cursor().execute(operation, parameters)

    def commit(self) -> None:
        """Commit the open transaction (a no-op in autocommit mode)."""
        self._check_open()
        self._host.commit()

    def rollback(self) -> None:
        """Roll back the open transaction (a no-op in autocommit mode)."""
        self._check_open()
        self._host.rollback()
        self._snapshot = None

    def close(self) -> None:
        """Close the host and forget the client's keys; an open transaction is rolled back."""
        if self._closed:
            return
        self._closed = True
        try:
            self._host.close()
        finally:
            self._client.close()

    def __enter__(self) -> Connection:
        self._check_open()
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            if not self._closed:
                if exc_type is None:
                    self.commit()
                else:
                    self.rollback()
        finally:
            self.close()

    # The query path.

    def _current_snapshot(self) -> CatalogSnapshot:
        version = self._host.catalog_version()
        if self._snapshot is None or self._snapshot.version != version:
            self._snapshot = self._host.catalog_snapshot()
        return self._snapshot

    def _prepare(self, text: str) -> tuple[PreparedStatement, Plan, CatalogSnapshot]:
        snapshot = self._current_snapshot()
        prepared = self._client.prepare(text, snapshot, enclave_available=self._enclave)
        host_plan = self._host.describe(prepared.host_text)
        self._client.accept_host_plan(prepared, host_plan)
        return prepared, host_plan, snapshot

    def _run(self, sql: str, parameters: Sequence[object]) -> StatementResult:
        self._check_open()
        statements = self._client.split(sql)
        if not statements:
            raise ProgrammingError("the SQL text holds no statement")
        if len(statements) > 1 and parameters:
            raise ProgrammingError(
                "parameters can only be used with a single statement; run the statements one by one"
            )
        result = StatementResult(None, (), -1)
        for text in statements:
            result = self._run_one(text, parameters)
        return result

    def _run_one(self, text: str, parameters: Sequence[object]) -> StatementResult:
        explained = _EXPLAIN.match(text)
        if explained is not None:
            return self._explain_result(text[explained.end() :], parameters)
        if _ALTER_COLUMN.search(text):
            done = self._alter_column_in_place(text, parameters)
            if done is not None:
                return done
        prepared, host_plan, snapshot = self._prepare(text)
        if host_plan.kind == "key_ddl":
            if parameters:
                raise ProgrammingError("key DDL takes no parameters")
            changes = self._client.complete_key_ddl(prepared, snapshot)
            self._host.apply_key_ddl(host_plan, changes)
            return StatementResult(None, (), -1)
        if host_plan.enclave_operations:
            outcome = self._execute_in_enclave(prepared, host_plan, parameters, snapshot)
        else:
            values = self._client.parameter_values(prepared, parameters, snapshot)
            outcome = self._host.execute(host_plan, values)
        if outcome.table is None:
            return StatementResult(None, (), outcome.rowcount)
        small = self._client.decrypt_small(prepared, outcome.table, snapshot)
        table = None
        if small is None:
            table = self._client.decrypt(prepared, outcome.table, snapshot)
        type_codes = list(outcome.column_types)
        encrypted = [False] * len(type_codes)
        for index, column in enumerate(prepared.plan.result_columns[: len(type_codes)]):
            if column.target is not None:
                encrypted[index] = True
                if self._client.column_encryption:
                    type_codes[index] = column.target.declared_type
        return StatementResult(table, tuple(type_codes), outcome.rowcount, tuple(encrypted), small)

    def _execute_in_enclave(
        self, prepared: Any, host_plan: Any, parameters: Sequence[object], snapshot: Any
    ) -> Any:
        """Run a statement with enclave operations; when the enclave no longer knows the
        session (closed, or expired after being idle), open a new one and retry once."""
        session = self._enclave_session()
        enclave = self._client.enclave_values(prepared, parameters, snapshot, session)
        try:
            return self._host.execute(host_plan, enclave.values, enclave=enclave.execution)
        except errors.EnclaveSessionError:
            # Safe to retry: the enclave refuses an unknown session at begin_query, before the
            # host has run anything. The package was sealed for the dead session, so the new
            # session (attested afresh) needs a new package. A second refusal propagates.
            session.close()
        session = self._enclave_session()
        enclave = self._client.enclave_values(prepared, parameters, snapshot, session)
        return self._host.execute(host_plan, enclave.values, enclave=enclave.execution)

    def _run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> StatementResult:
        self._check_open()
        statements = self._client.split(sql)
        if len(statements) != 1:
            raise ProgrammingError("executemany takes exactly one statement")
        prepared, host_plan, snapshot = self._prepare(statements[0])
        # Each execution of a statement with enclave operations needs its own package.
        if host_plan.kind != "dml" or host_plan.enclave_operations:
            result = StatementResult(None, (), -1)
            for row in rows:
                result = self._run_one(statements[0], row)
            return result
        if not rows:
            return StatementResult(None, (), 0)
        columns = self._client.parameter_columns(prepared, rows, snapshot)
        count = self._host.execute_many(host_plan, columns)
        return StatementResult(None, (), count)

    def _alter_column_in_place(
        self, text: str, parameters: Sequence[object]
    ) -> StatementResult | None:
        """ALTER TABLE … ALTER COLUMN that encrypts, re-encrypts or decrypts in place (see
        docs/rotation.md), or None when the statement is something else."""
        from engine.rotation import run_column_change
        from engine.sql.alter_column_encryption import describe_alter_column_encryption_sql

        change = describe_alter_column_encryption_sql(text, self._current_snapshot())
        if change is None:
            return None
        if parameters:
            raise ProgrammingError("ALTER TABLE … ALTER COLUMN takes no parameters")
        return StatementResult(None, (), run_column_change(self, change, text).rows)

    def alter_column_encryption(
        self,
        sql: str,
        *,
        allow_decryption: bool = False,
        path: Literal["auto", "client", "enclave"] = "auto",
        enclave: EnclaveContext | None = None,
        progress: bool | Callable[[int], None] | None = None,
        batch_rows: int = 65_536,
    ) -> AlterColumnResult:
        """Run ``ALTER TABLE t ALTER COLUMN c <type> [ENCRYPTED WITH (…)]`` in place and return
        an ``engine.rotation.AlterColumnResult`` that says which path ran (docs/rotation.md).
        Decrypting a column needs ``allow_decryption=True``."""
        from engine.rotation import alter_column_encryption

        return alter_column_encryption(
            self,
            sql,
            allow_decryption=allow_decryption,
            path=path,
            enclave=enclave,
            progress=progress,
            batch_rows=batch_rows,
        )

    def explain(self, sql: str) -> str:
        """Where each statement of ``sql`` runs and which values the client encrypts or
        decrypts, as text. Nothing is executed, and no literal value is shown.

        >>> con = connect(":memory:")
        >>> print(con.explain("SELECT 1 AS one"))
        query: runs in DuckDB on plaintext
          host SQL: SELECT 1 AS one
        >>> con.close()
        """
        self._check_open()
        lines: list[str] = []
        for text in self._client.split(sql):
            prepared, host_plan, _snapshot = self._prepare(text)
            plan = prepared.plan
            tables = _encrypted_tables(text, _snapshot)
            where = (
                f"DuckDB, on ciphertext for the encrypted columns of {', '.join(tables)}"
                if tables
                else "DuckDB on plaintext"
            )
            if plan.kind == "key_ddl":
                where = "the catalog only (the client completes keys; DuckDB never sees it)"
            lines.append(f"{plan.kind}: runs in {where}")
            if host_plan.sql is not None:
                lines.append(f"  host SQL: {host_plan.sql}")
            for number, spec in enumerate(plan.parameters, start=1):
                role = _ENCLAVE_MARKERS.get(spec.source[0])
                if role is not None:
                    lines.append(f"  ? {number}: {role}")
                    continue
                origin = (
                    f"your parameter {spec.source[1] + 1}"
                    if spec.source[0] == "user"
                    else "a literal lifted out of the text"
                )
                how = (
                    f"encrypted by the client for {spec.target.label} "
                    f"({spec.target.encryption_type}, key {spec.target.cek_name})"
                    if spec.target is not None
                    else "sent as plaintext"
                )
                if spec.tag:
                    how += ", sent as the cell's tag"
                lines.append(f"  ? {number}: {origin}, {how}")
            for column in plan.result_columns:
                if column.target is not None:
                    lines.append(
                        f"  column {column.name}: decrypted by the client "
                        f"({column.target.label}, {column.target.encryption_type})"
                    )
            for operation in plan.enclave_operations:
                lines.append(
                    f"  enclave: {operation.construct} on {operation.target.label} "
                    f"(key {operation.target.cek_name}, authorized per query)"
                )
        return "\n".join(lines)

    def explain_operations(self, sql: str) -> list[tuple[str, str, str]]:
        """One ``(operation, column, where)`` row per operation on an encrypted column of
        ``sql``, where ``where`` is "duckdb plaintext", "duckdb deterministic ciphertext" or
        "enclave". Nothing is executed, and no literal value is shown.

        >>> con = connect(":memory:")
        >>> con.explain_operations("SELECT 1 AS one")
        [('query', '', 'duckdb plaintext')]
        >>> con.close()
        """
        self._check_open()
        rows: list[tuple[str, str, str]] = []
        for text in self._client.split(sql):
            plan = self._prepare(text)[0].plan
            for native, column in plan.native_operations:
                rows.append((native, column, "duckdb deterministic ciphertext"))
            compared = {column for _, column in plan.native_operations}
            for spec in plan.parameters:
                target = spec.target
                if (
                    target is not None
                    and target.encryption_type == "DETERMINISTIC"
                    and target.label not in compared
                ):
                    rows.append(
                        (
                            "compare or write a value",
                            target.label,
                            "duckdb deterministic ciphertext",
                        )
                    )
            for operation in plan.enclave_operations:
                rows.append((operation.construct, operation.target.label, "enclave"))
        unique = list(dict.fromkeys(rows))
        return unique or [("query", "", "duckdb plaintext")]

    def _explain_result(self, sql: str, parameters: Sequence[object]) -> StatementResult:
        import pyarrow as pa

        if parameters:
            raise ProgrammingError("EXPLAIN takes no parameters; it never runs the statement")
        rows = self.explain_operations(sql)
        columns = list(zip(*rows, strict=True))
        table = pa.table(
            {
                name: pa.array(list(values), pa.string())
                for name, values in zip(("operation", "column", "where"), columns, strict=True)
            }
        )
        return StatementResult(table, ("VARCHAR", "VARCHAR", "VARCHAR"), -1, (False,) * 3)

    # Bulk insert.

    def bulk_insert(
        self,
        table: str,
        data: Any,
        *,
        progress: bool | None = None,
        batch_rows: int = BULK_BATCH_ROWS,
    ) -> int:
        """Insert ``data`` into ``table`` atomically and return the number of rows.

        ``data`` is an Arrow table, a pandas DataFrame (columns matched by name) or an iterable
        of tuples (one value per table column, in order). Encrypted columns are encrypted in
        native batches of ``batch_rows``; the rows are appended with one Arrow scan. A progress
        bar shows when ``progress`` is True, or when it is None, stderr is a terminal and the
        load has at least a million rows.
        """
        self._check_open()
        if batch_rows < 1:
            raise ProgrammingError("batch_rows must be at least 1")
        snapshot = self._current_snapshot()
        info = snapshot.table(table)
        columns, total = _columns_of(data, info)
        show = (
            bool(progress)
            if progress is not None
            else (sys.stderr.isatty() and total >= PROGRESS_THRESHOLD_ROWS)
        )
        import pyarrow as pa
        from tqdm import tqdm

        if total == 0:
            self._client.encrypt_batch(info, columns, snapshot)  # still checks the columns
            return 0
        columns = _plain_columns_as_arrow(columns, info)
        slices = [
            {name: _slice(values, offset, batch_rows) for name, values in columns.items()}
            for offset in range(0, total, batch_rows)
        ]
        # The first batch runs alone: it unwraps the CEKs once, before threads would race to,
        # and its schema is the stream's.
        first = self._client.encrypt_batch(info, slices[0], snapshot)
        failures: list[BaseException] = []
        with tqdm(total=total, unit="rows", disable=not show, desc=f"insert {info.name}") as bar:

            def batches() -> Iterator[pa.RecordBatch]:
                """Encrypted batches in order, encrypted ahead by a thread pool (native
                encryption releases the GIL) while DuckDB inserts the ones before."""
                try:
                    yield from first.to_batches()
                    bar.update(first.num_rows)
                    if len(slices) == 1:
                        return
                    workers = min(len(slices) - 1, os.cpu_count() or 1, 8)
                    with ThreadPoolExecutor(max_workers=workers) as pool:
                        encrypt = partial(self._client.encrypt_batch, info, snapshot=snapshot)
                        for batch in pool.map(encrypt, slices[1:]):
                            if batch.schema != first.schema:
                                batch = batch.cast(first.schema)
                            yield from batch.to_batches()
                            bar.update(batch.num_rows)
                except GeneratorExit:
                    raise  # DuckDB stopped reading (its own error is the one to raise)
                except BaseException as error:
                    failures.append(error)  # DuckDB rewraps it; the caller gets this one
                    raise

            stream = pa.RecordBatchReader.from_batches(first.schema, batches())
            try:
                return self._host.append_arrow(info.name, stream)
            except errors.Error:
                if failures:
                    raise failures[0] from None
                raise


def _plain_columns_as_arrow(columns: dict[str, Any], info: TableInfo) -> dict[str, Any]:
    """Plaintext columns given as lists become one Arrow array each, so that every batch of
    the stream has the same type (a batch of only NULLs would otherwise be typed null)."""
    import pyarrow as pa

    converted = {}
    for name, values in columns.items():
        if isinstance(values, list) and info.column(name).encryption is None:
            try:
                values = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                raise ProgrammingError(
                    f"the values of column {info.name}.{name} do not share one type; give "
                    "values of the column's type"
                ) from error
        converted[name] = values
    return converted


# EXPLAIN <statement> (not EXPLAIN ANALYZE, which DuckDB would run) answers where each
# operation runs instead of DuckDB's physical plan.
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?!ANALY[SZ]E\b)", re.IGNORECASE)

# What EXPLAIN says of the ? markers an enclave operation adds (engine/sql/plan.py EnclaveRole).
_ENCLAVE_MARKERS = {
    "enclave_query": "the enclave query id (the host fills it in when the query begins)",
    "enclave_cek": "an enclave operation's key id (set by the client)",
    "enclave_type": "an enclave operation's type code (set by the client)",
    "enclave_operator": "an enclave operation's operator code (set by the client)",
    "enclave_constant": "an enclave operation's constant, encrypted by the client",
    "enclave_program": (
        "the key ids, type codes, operator codes and encrypted constants of an enclave filter's "
        "predicates (set by the client; the host passes them by reference)"
    ),
}


def _encrypted_tables(text: str, snapshot: CatalogSnapshot) -> list[str]:
    """Names of the tables with encrypted columns that a statement mentions."""
    from sqlglot import exp

    from engine.sql.dialect import parse_statements

    names = set()
    for statement in parse_statements(text):
        for table in statement.find_all(exp.Table):
            if snapshot.has_table(table.name) and snapshot.table(table.name).encrypted:
                names.add(snapshot.table(table.name).name)
    return sorted(names)


def _slice(values: Any, offset: int, length: int) -> Any:
    return (
        values[offset : offset + length]
        if isinstance(values, list)
        else values.slice(offset, length)
    )


def _columns_of(data: Any, info: TableInfo) -> tuple[dict[str, Any], int]:
    """The data as {column name: values}, names as the table spells them, and the row count."""
    import pyarrow as pa

    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        columns = {}
        for name in data.column_names:
            canonical = info.column(name).name  # ProgrammingError for an unknown column
            if canonical in columns:
                raise ProgrammingError(f"column {canonical} appears twice in the data")
            columns[canonical] = data.column(name)
        return columns, data.num_rows
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ProgrammingError(
            "bulk_insert takes a pyarrow Table, a pandas DataFrame or an iterable of tuples"
        )
    rows = [tuple(row) for row in data]
    width = len(info.columns)
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ProgrammingError(
                f"row {number} has {len(row)} value(s) but table {info.name} has {width} column(s)"
            )
    values = list(zip(*rows, strict=True)) if rows else [() for _ in info.columns]
    return {c.name: list(v) for c, v in zip(info.columns, values, strict=True)}, len(rows)


def connect(
    database: str | os.PathLike[str] = ":memory:",
    *,
    column_encryption: bool = True,
    attestation_protocol: str | None = None,
    attestation_url: str | None = None,
    key_store_providers: Mapping[str, KeyStoreProvider] | None = None,
    trusted_key_paths: Iterable[str] | None = None,
    key_dir: str | os.PathLike[str] | None = None,
    cek_cache_ttl: float = 7200,
    read_only: bool = False,
    enclave_measurements: Iterable[str] | None = None,
) -> Connection:
    """Open an EnclaveSQL database file (or ``":memory:"``) and return a Connection.

    >>> con = connect(":memory:")
    >>> con.execute("SELECT 42").fetchone()
    (42,)
    >>> con.close()
    """
    if attestation_protocol not in ATTESTATION_PROTOCOLS:
        raise ProgrammingError(
            f"attestation_protocol must be None, 'none' or 'service', not {attestation_protocol!r}"
        )
    if attestation_protocol == "service" and not attestation_url:
        raise ProgrammingError("attestation_protocol='service' needs an attestation_url")
    from engine.client.client import Client
    from engine.host.host import Host

    client = Client(
        column_encryption=column_encryption,
        key_store_providers=key_store_providers,
        trusted_key_paths=trusted_key_paths,
        key_dir=key_dir,
        cek_cache_ttl=cek_cache_ttl,
    )
    try:
        host = Host(os.fspath(database), read_only=read_only)
    except BaseException:
        client.close()
        raise
    return Connection(
        host,
        client,
        attestation_protocol=attestation_protocol,
        attestation_url=attestation_url,
        enclave_measurements=enclave_measurements,
    )

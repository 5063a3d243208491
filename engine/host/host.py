"""The host: one DuckDB connection, the catalog tables, describe with a plan cache, execution.

It receives SQL text with ``?`` markers, ciphertext parameters, wrapped CEK envelopes and Arrow
batches of ciphertext, and returns Arrow. It never holds a CEK or a plaintext value of an
encrypted column, and nothing here may ask for one. Only plain data crosses its methods (Plans,
Arrow, bytes), so it can move behind Arrow Flight unchanged.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from enclave import duckdb_extension
from engine import log
from engine.errors import InterfaceError, OperationalError, ProgrammingError
from engine.host.catalog_store import CatalogStore
from engine.host.column_rewrite import ciphertext_checkpoint, rewrite_column
from engine.host.describe_cache import DescribeCache
from engine.host.duckdb_errors import map_duckdb_error
from engine.host.enclave_execution import (
    append_group_ids,
    bind_query_id,
    finish_aggregates,
    join_group_ids,
)
from engine.host.enclave_gateway import NOT_BUILT, EnclaveGateway, native_enclave_available
from engine.host.enclave_udfs import UDF_FAILURES, register_enclave_udfs
from engine.host.native_stage import native_stage
from engine.host.rewrite_values_insert import rewrite_values_insert
from engine.host.udf_owners import acquire, release, shared_key
from engine.sql.alter_column_encryption import ColumnEncryptionChange
from engine.sql.catalog import CatalogSnapshot
from engine.sql.describe import describe_sql
from engine.sql.plan import CatalogChange, EnclaveExecution, Plan, ResultColumn
from engine.sql.rewrite_enclave_order import STAGE_VIEW
from engine.sql.tag_columns import cell_tags

__all__ = ["Host", "HostResult"]

# Statements of kind "other" that cannot change which tables or columns exist; any other
# "other" statement (ATTACH, IMPORT DATABASE, USE, …) bumps the catalog version to be safe.
_SCHEMA_NEUTRAL = frozenset(
    "BEGIN START COMMIT END ROLLBACK ABORT SET RESET PRAGMA EXPLAIN DESCRIBE SHOW SUMMARIZE "
    "CALL CHECKPOINT FORCE VACUUM ANALYZE LOAD INSTALL EXPORT".split()
)
_TRANSACTION_CONTROL = frozenset("BEGIN START COMMIT END ROLLBACK ABORT".split())
_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.DOTALL)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_view_numbers = itertools.count()
# Rows per Arrow batch of a query's result (DuckDB's own default for its Arrow output).
_ARROW_BATCH_ROWS = 131_072


def _open_duckdb(database: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open ``database``, allowing unsigned extensions when this installation built the native
    enclave predicates (the one file the host loads). A file this process already opened with
    DuckDB's default settings cannot be opened with other ones: that connection keeps the
    Python UDFs instead."""
    if not duckdb_extension.available():
        return duckdb.connect(database, read_only=read_only)
    try:
        config: dict[str, str | bool | int | float | list[str]]
        config = {"allow_unsigned_extensions": True}
        return duckdb.connect(database, read_only=read_only, config=config)
    except duckdb.ConnectionException as error:
        if "different configuration" not in str(error):
            raise
        return duckdb.connect(database, read_only=read_only)


@dataclass(frozen=True)
class HostResult:
    """What one statement returned: rows as Arrow (ciphertext stays ciphertext), the DuckDB type
    of each column, the affected row count of DML (-1 otherwise) and the plan's column metadata."""

    table: pa.Table | None
    column_types: tuple[str, ...]
    rowcount: int
    result_columns: tuple[ResultColumn, ...]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _with_tags(
    data: pa.Table | pa.RecordBatchReader, tags: list[tuple[str, str]]
) -> pa.Table | pa.RecordBatchReader:
    """``data`` with a tag column (named as the table's) for each (tag, cell column) pair,
    computed batch by batch as the stream is read (engine.sql.tag_columns.cell_tags: numpy,
    about 30 ms per million cells, where the same expression in SQL cost ten times that)."""
    if not tags:
        return data
    if isinstance(data, pa.Table):
        for tag, source in tags:
            data = data.append_column(pa.field(tag, pa.int64()), cell_tags(data.column(source)))
        return data
    schema = data.schema
    for tag, _ in tags:
        schema = schema.append(pa.field(tag, pa.int64()))
    reader = data

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            arrays = [*batch.columns, *(cell_tags(batch.column(s)) for _, s in tags)]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _first_word(sql: str) -> str:
    match = _FIRST_WORD.match(sql)
    return match.group(1).upper() if match else ""


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """DuckDB errors of catalog reads as PEP 249 errors (they carry no values)."""
    try:
        yield
    except duckdb.Error as error:
        raise map_duckdb_error(error, redact=False) from None


class _Epoch:
    """A counter shared by every Host on one database file in this process. DuckDB shares one
    database between such connections, so a catalog change by one must reach the others."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_EPOCHS: dict[str, _Epoch] = {}
_EPOCHS_LOCK = threading.Lock()


def _epoch_for(database: str) -> _Epoch:
    if database in ("", ":memory:") or database.startswith(":memory:"):
        return _Epoch()  # every in-memory connection is its own database
    key = os.path.realpath(database)
    with _EPOCHS_LOCK:
        return _EPOCHS.setdefault(key, _Epoch())


def _rows_of(table: pa.Table | None) -> list[list[object]]:
    return [] if table is None else [list(row.values()) for row in table.to_pylist()]


class Host:
    """The untrusted side of a connection, over one DuckDB database.

    >>> host = Host(":memory:")
    >>> host.execute(host.describe("CREATE TABLE t (a INT)")).rowcount
    -1
    >>> result = host.execute(host.describe("SELECT 40 + ?"), [2])
    >>> result.table.column(0).to_pylist(), result.column_types
    ([42], ('INTEGER',))
    >>> host.close()
    """

    def __init__(self, database: str = ":memory:", *, read_only: bool = False) -> None:
        try:
            self._con = _open_duckdb(database, read_only)
        except duckdb.Error as error:
            raise map_duckdb_error(error, redact=False) from None
        # Connections of this process to one file share the enclave UDFs (engine/host/udf_owners).
        self._udf_key = shared_key(database)
        self._udf_user = False
        self._store = CatalogStore(self._con)
        if not read_only:
            self._store.create_tables()
        elif not self._store.exists():
            self._con.close()
            raise OperationalError(
                "the database has no EnclaveSQL catalog (schema sys) and is opened read-only; "
                "open it once without read_only to create the catalog"
            )
        self._lock = threading.RLock()
        self._closed = False
        # Versions are never reused within this process, even when a transaction that bumped
        # one rolls back, so a (text, version) key never names two different catalogs.
        self._high_water = 0
        # The catalog version this connection's transaction sees, kept in memory because
        # reading it costs a query. It is read again after anything of ours that may have
        # changed it, and whenever another connection to the same file bumped the shared epoch.
        self._version: int | None = None
        self._last_version: int | None = None
        self._epoch = _epoch_for(database)
        self._seen_epoch = -1
        self._snapshots: dict[int, CatalogSnapshot] = {}
        self.describe_cache = DescribeCache()
        self.snapshot_builds = 0
        # Set by enable_enclave: from then on statements are described with enclave rewrites.
        self._gateway: EnclaveGateway | None = None
        # The first PEP 249 error an enclave UDF raised, per query id (DuckDB rewraps it).
        self._udf_failures = UDF_FAILURES
        self._native_filters = False

    # The catalog.

    @contextlib.contextmanager
    def _statement(self) -> Iterator[None]:
        """Around a statement: the lock and the open check."""
        with self._lock:
            self._check_open()
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the host connection is closed; open a new connection")

    def catalog_version(self) -> int:
        """The catalog version this connection's transaction sees."""
        with self._lock, _mapped():
            self._check_open()
            return self._current_version()

    def catalog_snapshot(self) -> CatalogSnapshot:
        """The catalog (metadata and wrapped envelopes only) at the current version."""
        with self._lock, _mapped():
            self._check_open()
            return self._snapshot_at(self._current_version())

    def _snapshot_at(self, version: int) -> CatalogSnapshot:
        snapshot = self._snapshots.get(version)
        if snapshot is None:
            snapshot = self._store.snapshot(version)
            self.snapshot_builds += 1
            if len(self._snapshots) > 8:
                self._snapshots.clear()
            self._snapshots[version] = snapshot
        return snapshot

    def describe(self, sql: str) -> Plan:
        """The Plan of one statement, cached per (text, catalog version)."""
        with self._lock, _mapped():
            self._check_open()
            version = self._current_version()

            def build() -> Plan:
                plans = describe_sql(
                    sql, self._snapshot_at(version), enclave_available=self._gateway is not None
                )
                if len(plans) != 1:
                    raise ProgrammingError(
                        f"the host describes one statement at a time, not {len(plans)}; "
                        "split the text at its semicolons"
                    )
                return plans[0]

            return self.describe_cache.get_or_describe(sql, version, build)

    # The enclave.

    def enable_enclave(self) -> bool:
        """Load the enclave and register its UDFs on this connection; False when the native
        enclave is not built. From then on statements are described with enclave rewrites."""
        with self._lock:
            self._check_open()
            if self._gateway is None:
                if not native_enclave_available():
                    return False
                self._gateway = EnclaveGateway()
                self._native_filters = native = self._load_native_filters()
                gateway = self._gateway

                def register(connection: duckdb.DuckDBPyConnection) -> None:
                    register_enclave_udfs(
                        connection, gateway, self._udf_failures, native_filters=native
                    )

                acquire(self._udf_key, self._con, register)
                self._udf_user = True
                self.describe_cache.clear()  # plans described without the enclave differ
            return True

    def _load_native_filters(self) -> bool:
        """LOAD the native enclave predicates when this database allows it (see
        _open_duckdb); False keeps the Python UDFs."""
        allowed = self._con.execute(
            "SELECT value FROM duckdb_settings() WHERE name = 'allow_unsigned_extensions'"
        ).fetchall()
        if not allowed or str(allowed[0][0]).lower() != "true":
            return False
        try:
            return duckdb_extension.load_into(self._con)
        except duckdb.Error as error:
            log.ENCLAVE.warning(
                "the native enclave predicates did not load (%s); using the Python UDFs",
                type(error).__name__,
            )
            return False

    @property
    def native_filters(self) -> bool:
        """Whether enclave predicates run as native DuckDB functions on this connection."""
        return self._native_filters

    def enclave_gateway(self) -> EnclaveGateway:
        """The relay to the enclave (it opens sessions for the client's EnclaveSession)."""
        if not self.enable_enclave() or self._gateway is None:
            raise OperationalError(NOT_BUILT)
        return self._gateway

    def _execute_in_enclave(
        self, plan: Plan, parameters: Sequence[object], enclave: EnclaveExecution | None
    ) -> HostResult:
        """Run a plan with enclave operations between begin_query and end_query."""
        assert plan.sql is not None
        if enclave is None:
            raise ProgrammingError(
                "this statement runs operations in the enclave and needs the client's enclave "
                "package; run it through a connection with attestation_protocol set"
            )
        expected = sorted(
            (o.stage, o.result_column)
            for o in plan.enclave_operations
            if o.result_column is not None
        )
        if sorted((c.stage, c.result_column) for c in enclave.aggregates) != expected:
            raise ProgrammingError("the enclave aggregate calls do not match the statement")
        gateway = self.enclave_gateway()
        query_id = gateway.begin_query(enclave.session_id, enclave.package, plan.sql)
        log.enclave_query("begin", len(plan.enclave_operations), stages=len(plan.join_stages))
        views = contextlib.ExitStack()
        try:
            values = bind_query_id(plan, parameters, query_id)
            try:
                for number, stage in enumerate(plan.join_stages):
                    # Stage zero of an equi-JOIN: both sides with group ids over their cells.
                    call = next(
                        c for c in enclave.aggregates if (c.stage, c.result_column) == (0, number)
                    )
                    left = self._run(stage.left_sql, [values[i] for i in stage.left_parameters])
                    right = self._run(stage.right_sql, [values[i] for i in stage.right_parameters])
                    assert left.table is not None and right.table is not None
                    left_rows, right_rows = join_group_ids(
                        left.table,
                        right.table,
                        stage.left_column,
                        stage.right_column,
                        call,
                        gateway,
                        query_id,
                    )
                    views.enter_context(self._registered(stage.left_view, left_rows))
                    views.enter_context(self._registered(stage.right_view, right_rows))
                for group_stage in plan.group_stages:
                    # Stage zero of grouping below the outermost SELECT: the table with group
                    # ids over its key columns' cells.
                    calls = [
                        next(
                            c
                            for c in enclave.aggregates
                            if (c.stage, c.result_column) == (0, operation.result_column)
                        )
                        for operation in group_stage.operations
                    ]
                    rows = self._run(
                        group_stage.sql, [values[i] for i in group_stage.parameters]
                    ).table
                    assert rows is not None
                    rows = append_group_ids(
                        rows, group_stage.columns, group_stage.id_columns, calls, gateway, query_id
                    )
                    views.enter_context(self._registered(group_stage.view, rows))
                first = [call for call in enclave.aggregates if call.stage == 1]
                # With the native extension, the stage's SUM and AVG run as one DuckDB
                # aggregate over sealed enclave states instead of LISTs of cells.
                native = native_stage(plan.sql, first) if self._native_filters and first else None
                result = self._run(plan.sql if native is None else native.sql(query_id), values)
            except duckdb.Error as error:
                raise self._enclave_failure(error, query_id) from None
            table = result.table
            if table is not None and native is not None:
                table = native.spread(table)
                first = [call for call in first if call not in native.calls]
            if table is not None and first:
                table = finish_aggregates(table, first, gateway, query_id)
            if table is not None and plan.finish_sql is not None:
                # Stage two: sort, filter and limit stage one's rows, ranks and cells in place.
                result = self._run_over_stage(plan.finish_sql, table, query_id)
                table = result.table
                second = [call for call in enclave.aggregates if call.stage == 2]
                if table is not None and second:
                    table = finish_aggregates(table, second, gateway, query_id)
            if table is not None and plan.final_sql is not None:
                # Stage three: HAVING and ORDER BY over the enclave aggregates of stage two.
                result = self._run_over_stage(plan.final_sql, table, query_id)
                table = result.table
        finally:
            views.close()
            self._udf_failures.pop(query_id, None)
            duckdb_extension.take_failure(query_id)
            gateway.end_query(query_id)
            log.enclave_query("end", len(plan.enclave_operations), stages=len(plan.join_stages))
        if table is None:
            return HostResult(None, (), -1, ())
        if (
            plan.kind == "dml"
            and table.column_names == ["Count"]
            and not _RETURNING.search(plan.sql)
        ):
            count = table.column(0).to_pylist()
            return HostResult(None, (), int(count[0]) if count else 0, ())
        types = list(result.column_types)
        for call in enclave.aggregates:
            if call.kind == "aggregate" and call.result_column < len(types):
                # (A HAVING or ORDER BY input of stage one is past stage two's columns.)
                types[call.result_column] = "BLOB"  # one result cell per row, not a list
        return HostResult(table, tuple(types), -1, plan.result_columns)

    # Transactions.

    def _in_transaction(self) -> bool:
        # In autocommit mode every statement gets a new transaction id; inside BEGIN … COMMIT
        # they share one. Trying BEGIN instead would abort the caller's open transaction.
        first = self._con.execute("SELECT txid_current()").fetchall()
        second = self._con.execute("SELECT txid_current()").fetchall()
        return bool(first == second)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction around the block: ours, or the caller's if one is open.

        Inside the caller's transaction a failure must still leave nothing committable, so a
        failing statement is run to put DuckDB's transaction into its aborted state.
        """
        ours = not self._in_transaction()
        if ours:
            self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._forget_version()
            if ours:
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("ROLLBACK")
            else:
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("SELECT error('enclavesql: statement failed')")
            raise
        if ours:
            self._con.execute("COMMIT")
            self._epoch.bump()  # now other connections to the file can see the change

    def _bump_version(self) -> None:
        version = max(self._store.read_version(), self._high_water) + 1
        self._store.write_version(version)
        self._high_water = version
        self._version = version
        self._epoch.bump()

    def _current_version(self) -> int:
        epoch = self._epoch.value
        if self._version is None or epoch != self._seen_epoch:
            try:
                version = self._store.read_version()
            except duckdb.TransactionException:
                # A failed statement aborted the transaction: DuckDB refuses every read until
                # ROLLBACK. The statement that comes next is that ROLLBACK, or one DuckDB
                # refuses with the same advice, and neither needs a newer catalog.
                if self._last_version is None:
                    raise
                return self._last_version
            self._seen_epoch = epoch
            self._version = self._last_version = version
        return self._version

    def _forget_version(self) -> None:
        """After a commit, rollback or failure: read the version again, here and in every
        other connection to the same file."""
        self._version = None
        self._epoch.bump()

    def commit(self) -> None:
        with self._lock:
            self._check_open()
            try:
                self._con.commit()
            except duckdb.Error as error:
                raise map_duckdb_error(error, redact=False) from None
            finally:
                self._forget_version()

    def rollback(self) -> None:
        with self._lock:
            self._check_open()
            try:
                self._con.rollback()
            except duckdb.TransactionException as error:
                if "no transaction is active" not in str(error):
                    raise map_duckdb_error(error, redact=False) from None
            finally:
                self._forget_version()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._snapshots.clear()
                self.describe_cache.clear()
                if self._udf_user:
                    release(self._udf_key, self._con)
                else:
                    self._con.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # Execution.

    def _enclave_failure(self, error: duckdb.Error, query_id: int) -> BaseException:
        """What a DuckDB error of an enclave query's stage is raised as: the enclave UDF's own
        failure when one caused it (a tampered cell, say, in a WHERE or HAVING comparison), else
        the redacted engine error."""
        failure = self._udf_failures.pop(query_id, None) or duckdb_extension.take_failure(query_id)
        return failure if failure is not None else map_duckdb_error(error, redact=True)

    def _run_over_stage(self, sql: str, table: pa.Table, query_id: int) -> HostResult:
        """Run a later stage's ``sql`` over the previous stage's rows, registered as STAGE_VIEW."""
        with self._registered(STAGE_VIEW, table):
            try:
                return self._run(sql, ())
            except duckdb.Error as error:
                raise self._enclave_failure(error, query_id) from None

    def _run(self, sql: str, parameters: Sequence[object]) -> HostResult:
        relation = self._con.sql(sql, params=list(parameters)) if parameters else self._con.sql(sql)
        if relation is None:
            return HostResult(None, (), -1, ())
        types = tuple(str(t) for t in relation.types)
        table = relation.to_arrow_table()
        return HostResult(table, types, -1, ())

    def _run_query(self, sql: str, parameters: Sequence[object]) -> HostResult:
        """One query (a single statement that returns rows) to Arrow. DuckDB's own statement
        path is taken directly: the relation that ``sql()`` builds parses, binds and renders
        the statement again before running it, which was about 0.15 ms of every query."""
        submit = getattr(self._con, "_submit", None)
        if submit is None:  # another DuckDB build: the public path
            return self._run(sql, parameters)
        result = submit(sql, list(parameters) if parameters else None, "arrow", _ARROW_BATCH_ROWS)
        types = tuple(str(column[1]) for column in result.description or ())
        return HostResult(result.arrow_table(), types, -1, ())

    def execute(
        self,
        plan: Plan,
        parameters: Sequence[object] = (),
        enclave: EnclaveExecution | None = None,
    ) -> HostResult:
        """Run a described statement with its (already encrypted) parameter values; a plan with
        enclave operations also needs the client's ``enclave`` package."""
        with self._statement():
            if plan.kind == "key_ddl" or plan.sql is None:
                raise ProgrammingError("key DDL is applied with apply_key_ddl, not executed")
            if len(parameters) != len(plan.parameters):
                raise ProgrammingError(
                    f"the statement has {len(plan.parameters)} parameter marker(s) (?) but "
                    f"{len(parameters)} value(s) were given"
                )
            if plan.enclave_operations:
                return self._execute_in_enclave(plan, parameters, enclave)
            redact = bool(plan.required_keys)
            try:
                if plan.kind == "ddl" and plan.catalog_changes:
                    # Encryption metadata and the DuckDB DDL commit or roll back together.
                    self._check_version(plan)
                    with self._atomic():
                        self._store.apply(plan.catalog_changes)
                        self._run(plan.sql, parameters)
                        self._bump_version()
                    log.catalog_changed(plan.catalog_changes, self._high_water)
                    return HostResult(None, (), -1, ())
                if plan.kind == "query":
                    result = self._run_query(plan.sql, parameters)
                else:
                    result = self._run(plan.sql, parameters)
                if plan.kind == "ddl" or (
                    plan.kind == "other" and _first_word(plan.sql) not in _SCHEMA_NEUTRAL
                ):
                    # Plaintext DDL (possibly on an attached database, which DuckDB will not
                    # write in the same transaction as the catalog): bump the version after it.
                    self._bump_version()
                    log.plaintext_ddl(_first_word(plan.sql), self._high_water)
                    if plan.kind == "ddl":
                        return HostResult(None, (), -1, ())
            except duckdb.Error as error:
                self._forget_version()
                raise map_duckdb_error(error, redact=redact) from None
            if plan.kind == "other":
                # BEGIN, COMMIT, ROLLBACK, ATTACH …: what this transaction sees may have changed.
                self._forget_version()
            if plan.kind == "other" and _first_word(plan.sql) in _TRANSACTION_CONTROL:
                return HostResult(None, (), -1, ())
            if (
                plan.kind == "dml"
                and result.table is not None
                and result.table.column_names == ["Count"]
                and not _RETURNING.search(plan.sql)
            ):
                count = result.table.column(0).to_pylist()
                return HostResult(None, (), int(count[0]) if count else 0, ())
            return HostResult(result.table, result.column_types, -1, plan.result_columns)

    def _check_version(self, plan: Plan) -> None:
        if plan.catalog_version != self._current_version():
            raise OperationalError(
                "the catalog changed after the statement was described; describe it again"
            )

    def execute_many(self, plan: Plan, parameters: pa.Table | Sequence[Sequence[object]]) -> int:
        """Run a DML statement once per parameter row, atomically, and return the affected row
        count. ``parameters`` is an Arrow table (column ``p<j>`` for the j-th ?), where an
        INSERT … VALUES runs as one Arrow scan, or a list of rows, run one by one."""
        with self._statement():
            if plan.kind != "dml" or plan.sql is None:
                raise ProgrammingError(
                    "executemany runs INSERT, UPDATE and DELETE statements; use execute for "
                    "other statements"
                )
            table = parameters if isinstance(parameters, pa.Table) else None
            rows = None if table is not None else [list(row) for row in parameters]
            width = (
                table.num_columns
                if table is not None
                else (len(rows[0]) if rows else len(plan.parameters))
            )
            if width != len(plan.parameters) or any(len(r) != width for r in rows or ()):
                raise ProgrammingError(
                    f"the statement has {len(plan.parameters)} parameter marker(s) (?) but "
                    "the rows have another number of values"
                )
            if (table.num_rows if table is not None else len(rows or ())) == 0:
                return 0
            view = f"__enclavesql_batch_{next(_view_numbers)}"
            rewritten = rewrite_values_insert(plan.sql, view) if table is not None else None
            try:
                if rewritten is not None and table is not None:
                    # Cells in the batch: stored uncompressed (see append_arrow).
                    cells = bool(plan.required_keys) and not self._in_transaction()
                    with (
                        self._registered(view, table),
                        ciphertext_checkpoint(self._con, enabled=cells),
                        self._atomic(),
                    ):
                        return self._insert_from_view(rewritten, view, table)
                with self._atomic():
                    total = 0
                    for row in rows if rows is not None else _rows_of(table):
                        result = self._run(plan.sql, row)
                        if result.table is not None and result.table.column_names == ["Count"]:
                            total += int(result.table.column(0)[0].as_py())
                    return total
            except duckdb.Error as error:
                raise map_duckdb_error(error, redact=bool(plan.required_keys)) from None

    def _insert_from_view(self, sql: str, view: str, data: pa.Table | pa.RecordBatchReader) -> int:
        """Run ``sql``, which reads ``view``, with ``data`` registered under that name. The
        caller's transaction is ended before the view is dropped (see _registered)."""
        rows = self._con.execute(sql).fetchall()
        return int(rows[0][0]) if rows else 0

    @contextlib.contextmanager
    def _registered(self, view: str, data: pa.Table | pa.RecordBatchReader) -> Iterator[None]:
        # Registered outside the transaction: unregistering inside an aborted one would fail
        # and hide the error that aborted it.
        self._con.register(view, data)
        try:
            yield
        finally:
            with contextlib.suppress(duckdb.Error):
                self._con.unregister(view)

    def apply_key_ddl(self, plan: Plan, changes: Sequence[CatalogChange]) -> None:
        """Apply key DDL ``changes`` (the client's completion of ``plan``) in one transaction."""
        with self._statement():
            if plan.kind != "key_ddl":
                raise ProgrammingError("apply_key_ddl takes the plan of a key DDL statement")
            if [type(c) for c in changes] != [type(c) for c in plan.catalog_changes]:
                raise ProgrammingError("the completed key DDL does not match its plan")
            self._check_version(plan)
            try:
                with self._atomic():
                    self._store.apply(changes)
                    self._bump_version()
                log.catalog_changed(changes, self._high_water)
            except duckdb.Error as error:
                raise map_duckdb_error(error, redact=False) from None

    def rewrite_column(
        self,
        change: ColumnEncryptionChange,
        transform: Callable[[pa.Array], pa.Array],
        *,
        batch_rows: int = 65_536,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Rewrite one column in place (ALTER COLUMN … ENCRYPTED WITH, CEK rotation) and apply
        ``change.catalog_changes``, in one transaction; ``transform`` maps each batch of the
        column's values to its new values (docs/rotation.md). Returns the rows rewritten."""
        with self._statement():
            if change.catalog_version != self._current_version():
                raise OperationalError(
                    "the catalog changed after the statement was described; describe it again"
                )
            target = change.target
            try:
                # The commit (outside-in: _atomic ends first) checkpoints ciphertext only when
                # the new values are cells; see ciphertext_checkpoint. Inside the caller's own
                # transaction the setting is left alone: after a failure there DuckDB refuses
                # the SET that would restore it.
                cells = target is not None and not self._in_transaction()
                with ciphertext_checkpoint(self._con, enabled=cells), self._atomic():
                    rows = rewrite_column(
                        self._con,
                        change.table,
                        change.column,
                        storage_type=change.storage_type,
                        read_type=change.read_type,
                        transform=transform,
                        batch_rows=batch_rows,
                        progress=progress,
                        randomized=target is not None and target.encryption_type == "RANDOMIZED",
                    )
                    self._store.apply(change.catalog_changes)
                    self._bump_version()
            except duckdb.Error as error:
                raise map_duckdb_error(error, redact=True) from None
            log.rotation("column rewritten", table=change.table, column=change.column, rows=rows)
            return rows

    def append_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader) -> int:
        """Append ``data`` (columns named as the table's; ciphertext for encrypted columns) to
        ``table`` in one statement. Returns the row count. A RecordBatchReader is inserted as
        it is read, so its producer can prepare later batches while DuckDB inserts earlier
        ones; its batches are all inserted or none is."""
        with self._statement():
            info = self._snapshot_at(self._current_version()).table(table)
            known = {c.name.casefold() for c in info.columns}
            names = data.schema.names
            for name in names:
                if name.casefold() not in known:
                    info.column(name)  # raises ProgrammingError naming the column
            columns = ", ".join(_quote(n) for n in names)
            view = f"__enclavesql_append_{next(_view_numbers)}"
            # Each tagged DETERMINISTIC column's tag, computed here from the very cells of each
            # batch (0, the NULL cell's tag, for a column the data leaves out).
            given = {n.casefold(): n for n in names}
            tags = [
                (c.tag_column, given.get(c.name.casefold())) for c in info.columns if c.tag_column
            ]
            data = _with_tags(data, [(tag, source) for tag, source in tags if source is not None])
            targets = columns + "".join(f", {_quote(tag)}" for tag, _ in tags)
            values = columns + "".join(
                f", {_quote(tag) if source is not None else '0'}" for tag, source in tags
            )
            sql = f"INSERT INTO {_quote(info.name)} ({targets}) SELECT {values} FROM {_quote(view)}"
            try:
                # A large insert into a file writes whole row groups to it as it goes, trying
                # dictionary and FSST compression on each like a checkpoint would; on cells that
                # is most of the insert's time and saves nothing. Held through the commit too.
                # Not inside the caller's transaction: once a failure aborts it, DuckDB refuses
                # the SET that would put the setting back.
                cells = info.encrypted and not self._in_transaction()
                with (
                    self._registered(view, data),
                    ciphertext_checkpoint(self._con, enabled=cells),
                    self._atomic(),
                ):
                    return self._insert_from_view(sql, view, data)
            except duckdb.Error as error:
                raise map_duckdb_error(error, redact=info.encrypted) from None

    def statistics(self) -> dict[str, Any]:
        """Counters for tests and benchmarks: describe cache hits and misses, snapshot builds."""
        return {
            "describe_hits": self.describe_cache.hits,
            "describe_misses": self.describe_cache.misses,
            "snapshot_builds": self.snapshot_builds,
        }

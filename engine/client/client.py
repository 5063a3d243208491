"""The client half of a connection: key resolution, literal lifting, parameter encryption, key
DDL completion and result decryption, on plain data handed to it by the Connection.

It describes each statement itself (the SQL front end is pure) so that no plaintext literal of
an encrypted column ever goes to the host, and it checks the host's description against its
own. It never opens DuckDB and never talks to the host directly.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine import log
from engine.client.cek_cache import CekCache, ColumnKey
from engine.client.codec import encrypt_column
from engine.client.column_keys import ColumnKeyResolver
from engine.client.enclave_queries import (
    EnclaveValues,
    enclave_parameter_values,
    integer_sums,
)
from engine.client.enclave_session import EnclaveSession, SessionGateway
from engine.client.forced_encryption import unwrap_forced
from engine.client.key_ddl import complete_key_ddl
from engine.client.keystores.base import KeyStoreProvider
from engine.client.keystores.registry import build_registry
from engine.client.parameters import KeyLookup, encrypt_parameter_columns, encrypt_parameters
from engine.client.plan_templates import PlanTemplates
from engine.client.results import decrypt_result, name_result
from engine.client.small_results import SmallResult, small_result
from engine.errors import OperationalError, ProgrammingError
from engine.sql.catalog import CatalogSnapshot, TableInfo
from engine.sql.describe import describe
from engine.sql.dialect import SOURCE_SQL, parse_statements, to_sql
from engine.sql.plan import CatalogChange, EnclaveOperation, Plan, check_parameter_count
from engine.sql.rewrite_inexact_comparisons import lifted_literals_exact

__all__ = ["Client", "PreparedStatement"]


@dataclass(frozen=True)
class PreparedStatement:
    """One statement as the client prepared it: ``host_text`` is what the host may see (literals
    aimed at encrypted columns already lifted out), ``plan`` the client's own description."""

    host_text: str
    plan: Plan


class Client:
    """Everything a connection does with keys, on one catalog snapshot at a time.

    >>> from engine.sql.catalog import CatalogSnapshot
    >>> client = Client()
    >>> client.prepare("SELECT 1", CatalogSnapshot(1)).plan.kind
    'query'
    """

    def __init__(
        self,
        *,
        column_encryption: bool = True,
        key_store_providers: Mapping[str, KeyStoreProvider] | None = None,
        trusted_key_paths: Iterable[str] | None = None,
        key_dir: str | os.PathLike[str] | None = None,
        cek_cache_ttl: float = 7200,
    ) -> None:
        self.column_encryption = column_encryption
        if isinstance(trusted_key_paths, str):
            trusted_key_paths = [trusted_key_paths]  # one path, not its characters
        self.registry = build_registry(key_store_providers, key_directory=key_dir)
        self.resolver = ColumnKeyResolver(
            self.registry, CekCache(cek_cache_ttl), trusted_key_paths=trusted_key_paths
        )
        self._prepared: OrderedDict[tuple[str, int, bool], PreparedStatement] = OrderedDict()
        # Plans that lifted literals, per statement shape, with the literal values left out.
        self.templates = PlanTemplates()
        self.describes = 0  # statements described here (tests and benchmarks read it)
        # Per-statement work that is the same on every run of a warm statement.
        self._cek_values_memo: tuple[object, dict[str, Any]] = (None, {})
        self._host_plans_checked: dict[int, tuple[PreparedStatement, Plan]] = {}
        self._lock = threading.Lock()
        # The enclave session is opened on the first statement that needs it; establishing
        # it can wait on the attestation service, so it has its own lock.
        self._session: EnclaveSession | None = None
        self._session_lock = threading.Lock()
        self._warned_insecure = False

    def close(self) -> None:
        """Close the enclave session, forget cached CEKs (zeroed) and close key store sessions."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None
        self.resolver.clear_cache()
        self.registry.close()

    # Describe on the client.

    def split(self, sql: str) -> tuple[str, ...]:
        """The statements of ``sql``, each as its own text. Text without an inner semicolon is
        one statement and is not parsed here (prepare parses it); nothing is cached, because
        the text may hold plaintext literals.

        >>> Client().split("SELECT 1; SELECT 2")
        ('SELECT 1', 'SELECT 2')
        """
        if ";" not in sql.rstrip().rstrip(";"):
            return (sql,)
        statements = parse_statements(sql)
        if len(statements) == 1:
            return (sql,)
        return tuple(str(s.meta.get(SOURCE_SQL) or to_sql(s)) for s in statements)

    def prepare(
        self, text: str, snapshot: CatalogSnapshot, *, enclave_available: bool = False
    ) -> PreparedStatement:
        """Describe one statement against ``snapshot``, cached per text and version. A plan that
        lifted literals carries plaintext, so it is cached as a template per statement shape
        (the text with its literals abstracted) that leaves the values out; each execution
        fills in its own (engine.client.plan_templates)."""
        key = (text, snapshot.version, enclave_available)
        with self._lock:
            cached = self._prepared.get(key)
            if cached is not None:
                self._prepared.move_to_end(key)
                log.describe_cache("client")
                return cached
        context = (snapshot.version, enclave_available)
        templated = self.templates.lookup(text, context)
        # A template's literals are this text's values; one that is not a value of its
        # column's type needs the describe-time rewrite that a template would skip.
        if templated is not None and lifted_literals_exact(templated.plan):
            log.describe_cache("client")
            return templated  # type: ignore[no-any-return]
        prepared, lifted = self._describe(text, snapshot, enclave_available)
        log.describe_cache("client", prepared.plan)
        if lifted:
            # The plan holds the lifted plaintext literals: keep only a template of it.
            self.templates.remember(
                text,
                context,
                prepared,
                lambda probe: self._describe(probe, snapshot, enclave_available)[0],
            )
            return prepared
        with self._lock:
            self._prepared[key] = prepared
            while len(self._prepared) > 512:
                self._prepared.popitem(last=False)
        return prepared

    def _describe(
        self, text: str, snapshot: CatalogSnapshot, enclave_available: bool
    ) -> tuple[PreparedStatement, bool]:
        """The statement described, and whether it lifted literals."""
        statements = parse_statements(text)
        if len(statements) != 1:
            raise ProgrammingError(f"expected one statement, found {len(statements)}")
        self.describes += 1
        plan = describe(statements[0], snapshot, enclave_available=enclave_available)
        # Literals lifted into parameters or into enclave comparands are plaintext.
        lifted = any(p.source[0] == "literal" for p in plan.parameters) or any(
            source[0] == "literal" for op in plan.enclave_operations for source in op.operands
        )
        # With enclave rewrites the host describes the lifted but unrewritten text (the
        # rewritten one is not valid input).
        host_text = plan.parameterized_sql or (plan.sql if lifted and plan.sql else text)
        return PreparedStatement(host_text, plan), lifted

    def accept_host_plan(self, prepared: PreparedStatement, host_plan: Plan) -> None:
        """``check_host_plan``, remembered for the pair of objects: a warm statement gets the
        very same two plans from the two describe caches on every run, so it is checked once.
        Any other pair (a new plan from either side) is checked again."""
        known = self._host_plans_checked.get(id(prepared))
        if known is not None and known[0] is prepared and known[1] is host_plan:
            return
        self.check_host_plan(prepared, host_plan)
        if len(self._host_plans_checked) >= 512:
            self._host_plans_checked.clear()
        self._host_plans_checked[id(prepared)] = (prepared, host_plan)

    @staticmethod
    def check_host_plan(prepared: PreparedStatement, host_plan: Plan) -> None:
        """Raise OperationalError unless the host's plan encrypts and decrypts exactly where the
        client's does; a host that dropped a target could otherwise receive plaintext."""
        mine = prepared.plan
        same = (
            host_plan.kind == mine.kind
            and len(host_plan.parameters) == len(mine.parameters)
            and all(
                a.target == b.target and a.tag == b.tag
                for a, b in zip(host_plan.parameters, mine.parameters, strict=True)
            )
            and [c.target for c in host_plan.result_columns]
            == [c.target for c in mine.result_columns]
            and [_enclave_shape(o) for o in host_plan.enclave_operations]
            == [_enclave_shape(o) for o in mine.enclave_operations]
            and (
                not mine.enclave_operations
                or (
                    host_plan.sql,
                    host_plan.finish_sql,
                    host_plan.final_sql,
                    host_plan.join_stages,
                    host_plan.group_stages,
                )
                == (mine.sql, mine.finish_sql, mine.final_sql, mine.join_stages, mine.group_stages)
            )
        )
        if not same:
            raise OperationalError(
                "the host described the statement differently from the client (which values "
                "are encrypted, or which columns); refusing to send values. Reconnect, and "
                "report it if it happens again"
            )

    # The enclave.

    def enclave_session(
        self,
        gateway: SessionGateway,
        *,
        protocol: str,
        platform_dir: str | os.PathLike[str],
        attestation_url: str | None = None,
        expected_measurements: Iterable[str] | None = None,
    ) -> EnclaveSession:
        """The connection's enclave session, established (and attested) on first use; the
        InsecureEnclaveWarning of protocol "none" is emitted once per client."""
        with self._session_lock:
            if self._session is None or self._session.closed:
                self._session = EnclaveSession.establish(
                    gateway,
                    protocol=protocol,
                    platform_dir=platform_dir,
                    attestation_url=attestation_url,
                    expected_measurements=expected_measurements,
                    warn_insecure=not self._warned_insecure,
                )
                self._warned_insecure = True
            return self._session

    @property
    def current_enclave_session(self) -> EnclaveSession | None:
        """The open enclave session, if one was established."""
        session = self._session
        return session if session is not None and not session.closed else None

    def enclave_values(
        self,
        prepared: PreparedStatement,
        parameters: Sequence[object],
        snapshot: CatalogSnapshot,
        session: EnclaveSession,
    ) -> EnclaveValues:
        """The host's values for a statement with enclave operations, and its package."""
        check_parameter_count(prepared.plan, parameters)
        parameters = unwrap_forced(
            prepared.plan, parameters, column_encryption=self.column_encryption
        )
        if not self.column_encryption:
            raise ProgrammingError(
                "operations on encrypted columns in the enclave need column_encryption=True "
                "on the connection"
            )
        return enclave_parameter_values(
            prepared.plan,
            parameters,
            self.key_lookup(snapshot),
            session,
            snapshot,
            self.resolver,
        )

    # Keys.

    def key_lookup(self, snapshot: CatalogSnapshot) -> KeyLookup:
        """A function from CEK name to the plaintext CEK, through the resolver and its cache.

        Each value's key check is verified before the key is returned (once per cached key),
        so a host that put another CEK's envelope in this one's place gets
        CellAuthenticationError, not a wrong key.
        """
        column_key = self.column_key_lookup(snapshot, native=False)
        return lambda cek_name: column_key(cek_name).cek

    def column_key_lookup(
        self, snapshot: CatalogSnapshot, *, native: bool = True
    ) -> Callable[[str], ColumnKey]:
        """``key_lookup`` for the codec: each CEK as a ColumnKey that carries, with ``native``,
        the cache's key loaded into the native codec (loaded once per cached CEK)."""

        def key_for(cek_name: str) -> ColumnKey:
            name, values = self._cek_values(snapshot, cek_name)
            return self.resolver.column_key_checked(name, values, native=native)

        return key_for

    def _cek_values(
        self, snapshot: CatalogSnapshot, cek_name: str
    ) -> tuple[str, tuple[tuple[str, str, bytes, bytes | None], ...]]:
        """The CEK's name and its values as (provider, key path, envelope, key check), kept for
        the snapshot last asked about (they are the same on every statement until the catalog
        changes; an unknown name raises every time)."""
        memo_snapshot, memo = self._cek_values_memo
        if memo_snapshot is not snapshot:
            memo = {}
            self._cek_values_memo = (snapshot, memo)
        found = memo.get(cek_name)
        if found is None:
            cek = snapshot.cek(cek_name)
            values = []
            for value in cek.values:
                if value.encrypted_value is None:
                    continue
                cmk = snapshot.cmk(value.cmk_name)
                values.append(
                    (
                        cmk.key_store_provider_name,
                        cmk.key_path,
                        value.encrypted_value,
                        value.key_check,
                    )
                )
            found = memo[cek_name] = (cek.name, tuple(values))
        return found

    def complete_key_ddl(
        self, prepared: PreparedStatement, snapshot: CatalogSnapshot
    ) -> tuple[CatalogChange, ...]:
        """The plan's key DDL changes with generated CEKs wrapped and CMK metadata signed."""
        return complete_key_ddl(
            prepared.plan.catalog_changes,
            snapshot,
            self.registry,
            self.resolver,
            self.key_lookup(snapshot),
        )

    # Values.

    def parameter_values(
        self, prepared: PreparedStatement, parameters: Sequence[object], snapshot: CatalogSnapshot
    ) -> list[object]:
        """The values of the host's ``?`` markers, encrypted where the plan says so."""
        check_parameter_count(prepared.plan, parameters)
        parameters = unwrap_forced(
            prepared.plan, parameters, column_encryption=self.column_encryption
        )
        lookup = self.column_key_lookup(snapshot) if self.column_encryption else None
        return encrypt_parameters(prepared.plan.parameters, parameters, lookup)

    def parameter_columns(
        self,
        prepared: PreparedStatement,
        rows: Sequence[Sequence[object]],
        snapshot: CatalogSnapshot,
    ) -> pa.Table | list[list[object]]:
        """executemany's parameter rows as encrypted columns (or rows when they do not fit)."""
        width = prepared.plan.user_parameter_count
        if set(map(len, rows)) - {width}:
            for row in rows:
                check_parameter_count(prepared.plan, row)  # raises for the first bad row
        lookup = self.column_key_lookup(snapshot) if self.column_encryption else None
        return encrypt_parameter_columns(prepared.plan.parameters, rows, lookup)

    def decrypt(
        self, prepared: PreparedStatement, table: pa.Table, snapshot: CatalogSnapshot
    ) -> pa.Table:
        """``table`` with its encrypted columns decrypted (unchanged with encryption off)."""
        table = name_result(table, prepared.plan.result_columns)
        if not self.column_encryption or not any(c.target for c in prepared.plan.result_columns):
            return table
        lookup = self.column_key_lookup(snapshot)
        table = decrypt_result(table, prepared.plan.result_columns, lookup)
        return integer_sums(prepared.plan, table) if prepared.plan.enclave_operations else table

    def decrypt_small(
        self, prepared: PreparedStatement, table: pa.Table, snapshot: CatalogSnapshot
    ) -> SmallResult | None:
        """``decrypt`` for a small result as Python column lists, the Arrow table built only
        on request; None when the result takes ``decrypt`` (engine.client.small_results)."""
        plan = prepared.plan
        if plan.enclave_operations:
            return None
        encrypted = self.column_encryption and any(c.target for c in plan.result_columns)
        lookup = self.column_key_lookup(snapshot) if encrypted else None
        return small_result(table, plan.result_columns, lookup)

    def encrypt_batch(
        self, table: TableInfo, batch: Mapping[str, Any], snapshot: CatalogSnapshot
    ) -> pa.Table:
        """A bulk insert batch ({column: Arrow array or list}) as an Arrow table, with each
        encrypted column of ``table`` turned into cells in one native call."""
        arrays = []
        for name, values in batch.items():
            column = table.column(name)
            if column.encryption is not None:
                if not self.column_encryption:
                    raise ProgrammingError(
                        f"a value for the encrypted column {table.name}.{column.name} needs "
                        "column_encryption=True on the connection"
                    )
                key = self.column_key_lookup(snapshot)(column.encryption.cek_name)
                values = encrypt_column(
                    values,
                    key,
                    column.encryption.encryption_type,
                    column.declared_type,
                    column=f"{table.name}.{column.name}",
                )
            elif isinstance(values, list):
                values = pa.array(values)
            arrays.append(values)
        return pa.Table.from_arrays(arrays, names=list(batch))


def _enclave_shape(operation: EnclaveOperation) -> tuple[object, ...]:
    """What must agree between the client's and the host's enclave operations (the operand
    sources differ: the host sees lifted literals as parameters)."""
    return (
        operation.target,
        operation.operator,
        operation.type_form,
        operation.escape,
        len(operation.operands),
        operation.result_column,
        operation.result_type,
    )

"""A recording wrapper of the host interface for tests: it keeps every call and argument the
host receives (SQL text, plans, parameter values, Arrow data, catalog changes) and forwards it.

It must not change what it forwards or what comes back; it is for tests and diagnostics only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine.host.host import Host, HostResult
from engine.sql.catalog import CatalogSnapshot
from engine.sql.plan import CatalogChange, EnclaveExecution, Plan

__all__ = ["Call", "RecordingHost"]


@dataclass(frozen=True)
class Call:
    """One call into the host: the method name and its arguments."""

    method: str
    arguments: tuple[Any, ...]


class RecordingHost:
    """Forwards to a Host and records each call in ``calls``.

    >>> host = RecordingHost(Host(":memory:"))
    >>> host.execute(host.describe("SELECT ?"), [1]).table.num_rows
    1
    >>> [call.method for call in host.calls]
    ['describe', 'execute']
    >>> host.close()
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.calls: list[Call] = []

    def _record(self, method: str, *arguments: Any) -> None:
        self.calls.append(Call(method, arguments))

    @property
    def describe_cache(self) -> Any:
        return self.host.describe_cache

    def statistics(self) -> dict[str, Any]:
        return self.host.statistics()

    def catalog_version(self) -> int:
        return self.host.catalog_version()

    def catalog_snapshot(self) -> CatalogSnapshot:
        return self.host.catalog_snapshot()

    def describe(self, sql: str) -> Plan:
        self._record("describe", sql)
        return self.host.describe(sql)

    def execute(
        self,
        plan: Plan,
        parameters: Sequence[object] = (),
        enclave: EnclaveExecution | None = None,
    ) -> HostResult:
        self._record("execute", plan, tuple(parameters), enclave)
        return self.host.execute(plan, parameters, enclave)

    def enable_enclave(self) -> bool:
        self._record("enable_enclave")
        return self.host.enable_enclave()

    def enclave_gateway(self) -> Any:
        self._record("enclave_gateway")
        return self.host.enclave_gateway()

    def execute_many(self, plan: Plan, parameters: Any) -> int:
        self._record("execute_many", plan, parameters)
        return self.host.execute_many(plan, parameters)

    def apply_key_ddl(self, plan: Plan, changes: Sequence[CatalogChange]) -> None:
        self._record("apply_key_ddl", plan, tuple(changes))
        self.host.apply_key_ddl(plan, changes)

    def rewrite_column(self, change: Any, transform: Any, **options: Any) -> int:
        self._record("rewrite_column", change)

        def recorded(values: Any) -> Any:
            # Each batch the host hands out and what it gets back (cells, except when the
            # column is or becomes plaintext).
            result = transform(values)
            self._record("rewrite_column_batch", values, result)
            return result

        return self.host.rewrite_column(change, recorded, **options)

    def append_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader) -> int:
        if isinstance(data, pa.RecordBatchReader):
            # A stream is read once, by the host: record each batch as the host reads it.
            seen: list[pa.RecordBatch] = []
            source = data

            def batches() -> Iterator[pa.RecordBatch]:
                for batch in source:
                    seen.append(batch)
                    yield batch

            self._record("append_arrow", table, seen)
            return self.host.append_arrow(
                table, pa.RecordBatchReader.from_batches(source.schema, batches())
            )
        self._record("append_arrow", table, data)
        return self.host.append_arrow(table, data)

    def commit(self) -> None:
        self._record("commit")
        self.host.commit()

    def rollback(self) -> None:
        self._record("rollback")
        self.host.rollback()

    def close(self) -> None:
        self._record("close")
        self.host.close()

"""Which DuckDB connection owns the enclave UDFs of a database file shared within this process.

DuckDB keeps Python UDFs in the database instance, and every connection of one process to one
file shares that instance. A UDF still belongs to the connection that created it, though:
called after that connection closed, it crashes the process (DuckDB 2.0). So the first host
to enable the enclave on a file registers the UDFs and becomes the owner, the others use
them, and the owner's DuckDB connection stays open, parked, until the last of those hosts
closes. This module must not register anything itself or look at what the UDFs do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

__all__ = ["acquire", "release", "shared_key"]


@dataclass
class _Entry:
    owner: duckdb.DuckDBPyConnection
    users: int


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}


def shared_key(database: str) -> str | None:
    """The key under which connections to ``database`` share one DuckDB instance, or None
    when every connection gets its own (``:memory:`` and other special names).

    >>> shared_key(":memory:") is None, shared_key("a.duckdb") == shared_key("./a.duckdb")
    (True, True)
    """
    if not database or database.startswith(":"):
        return None
    return os.path.realpath(database)


def acquire(
    key: str | None,
    connection: duckdb.DuckDBPyConnection,
    register: Callable[[duckdb.DuckDBPyConnection], None],
) -> None:
    """Register the UDFs through ``connection`` unless a live connection of this process to the
    same database already did; either way ``connection`` now counts as one of their users."""
    if key is None:
        register(connection)
        return
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            register(connection)
            _entries[key] = _Entry(connection, 1)
        else:
            entry.users += 1


def release(key: str | None, connection: duckdb.DuckDBPyConnection) -> None:
    """``connection``'s host is closing: close it, unless it owns UDFs that other hosts still
    use (then it is parked, its transaction rolled back, and closed with the last user)."""
    if key is None:
        connection.close()
        return
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            connection.close()
            return
        entry.users -= 1
        if entry.users > 0:
            if entry.owner is connection:
                _roll_back(connection)  # parked: it must not hold the host's transaction
                return
            connection.close()
            return
        del _entries[key]
        if entry.owner is not connection:
            entry.owner.close()
        connection.close()


def _roll_back(connection: duckdb.DuckDBPyConnection) -> None:
    try:
        connection.rollback()
    except duckdb.Error:
        pass  # no transaction was open

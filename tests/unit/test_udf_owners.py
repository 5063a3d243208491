"""engine.host.udf_owners: the first host to enable the enclave on a file registers the UDFs
and its DuckDB connection stays open until the last host using them closes."""

from __future__ import annotations

from pathlib import Path

from engine.host import udf_owners


class _Connection:
    def __init__(self) -> None:
        self.closed = False
        self.rolled_back = 0

    def close(self) -> None:
        self.closed = True

    def rollback(self) -> None:
        self.rolled_back += 1


def test_the_owner_is_parked_until_the_last_user_closes(tmp_path: Path) -> None:
    key = udf_owners.shared_key(str(tmp_path / "db.duckdb"))
    owner, other, third = _Connection(), _Connection(), _Connection()
    registered: list[_Connection] = []
    for connection in (owner, other, third):
        udf_owners.acquire(key, connection, registered.append)  # type: ignore[arg-type]
    assert registered == [owner]  # one registration, through the first connection
    udf_owners.release(key, owner)  # type: ignore[arg-type]
    assert not owner.closed and owner.rolled_back == 1  # parked, transaction rolled back
    udf_owners.release(key, other)  # type: ignore[arg-type]
    assert other.closed and not owner.closed
    udf_owners.release(key, third)  # type: ignore[arg-type]
    assert third.closed and owner.closed
    # A new user registers afresh.
    fresh = _Connection()
    udf_owners.acquire(key, fresh, registered.append)  # type: ignore[arg-type]
    assert registered == [owner, fresh]
    udf_owners.release(key, fresh)  # type: ignore[arg-type]
    assert fresh.closed


def test_in_memory_databases_are_never_shared() -> None:
    first, second = _Connection(), _Connection()
    registered: list[_Connection] = []
    for connection in (first, second):
        udf_owners.acquire(None, connection, registered.append)  # type: ignore[arg-type]
    assert registered == [first, second]
    udf_owners.release(None, first)  # type: ignore[arg-type]
    assert first.closed and not second.closed

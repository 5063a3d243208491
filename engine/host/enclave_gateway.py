"""The host's door to the enclave: opens sessions, starts and ends queries, relays operator calls.

It is thin glue over the enclave section of `enclave.binding`: the host hashes the statement
text it will execute and hands the client's package over unopened. It must not import anything
from engine/client, and it cannot see keys: packages are sealed under the session key, and the
operators return only booleans, ranks, group ids and ciphertext.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.errors import OperationalError, ProgrammingError

__all__ = ["EnclaveGateway", "statement_hash", "native_enclave_available"]

# The calls the enclave section of the binding provides (the enclave contract).
_REQUIRED = (
    "enclave_info",
    "open_session",
    "close_session",
    "begin_query",
    "end_query",
    "enclave_compare",
    "enclave_filter",
    "enclave_rank",
    "enclave_group",
    "enclave_aggregate",
    "enclave_reencrypt",
    "enclave_encrypt",
)
NOT_BUILT = (
    "the native enclave is not built (enclave.binding has no enclave section); "
    "rebuild with `pip install -e .` or `make test`"
)


def statement_hash(statement_text: str) -> bytes:
    """SHA-256(UTF-16LE(statement text)): what the host executes, bound into the package.

    The client computes the same value when it builds the package; the enclave compares them.

    >>> statement_hash("SELECT 1") == hashlib.sha256("SELECT 1".encode("utf-16-le")).digest()
    True
    """
    if not isinstance(statement_text, str):
        raise ProgrammingError("the statement text must be a str")
    return hashlib.sha256(statement_text.encode("utf-16-le", "surrogatepass")).digest()


def _load_binding() -> ModuleType | None:
    try:
        binding = importlib.import_module("enclave.binding")
    except ImportError:
        return None
    if not all(hasattr(binding, name) for name in _REQUIRED):
        return None
    return binding


def native_enclave_available() -> bool:
    """True when the compiled module carries the enclave section of the contract.

    >>> isinstance(native_enclave_available(), bool)
    True
    """
    return _load_binding() is not None


class EnclaveGateway:
    """The host-side relay to the in-process enclave.

    Every method forwards to `enclave.binding`; the binding maps native statuses to PEP 249
    errors (a replayed package is an OperationalError, a bad cell a CellAuthenticationError).
    """

    def __init__(self, binding: Any = None) -> None:
        loaded = binding if binding is not None else _load_binding()
        if loaded is None:
            raise OperationalError(NOT_BUILT)
        self._binding: Any = loaded

    # --- sessions and queries ------------------------------------------------------------------

    def open_session(
        self, nonce: bytes, client_ecdh_public: bytes, platform_dir: str | os.PathLike[str]
    ) -> tuple[int, bytes]:
        """Ask the enclave for a session bound to the client's nonce and ECDH key.

        Returns (session_id, evidence); the evidence goes back to the client unchanged. The
        platform directory is created (owner-only) when missing, as on a fresh machine; the
        enclave creates the simulated platform key inside it.
        """
        try:
            Path(platform_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise OperationalError(
                f"the enclave platform directory {os.fspath(platform_dir)} cannot be created "
                f"({error.strerror}); set ENCLAVESQL_PLATFORM_DIR to a writable folder"
            ) from None
        session_id, evidence = self._binding.open_session(
            bytes(nonce), bytes(client_ecdh_public), os.fspath(platform_dir)
        )
        return int(session_id), bytes(evidence)

    def close_session(self, session_id: int) -> None:
        """The enclave wipes the session key and every query context of the session."""
        self._binding.close_session(session_id)

    def begin_query(self, session_id: int, package: bytes, statement_text: str) -> int:
        """Deliver the client's package for the statement the host is about to execute.

        The host hashes the text itself, so a package built for another statement is refused.
        """
        return int(
            self._binding.begin_query(session_id, bytes(package), statement_hash(statement_text))
        )

    def end_query(self, query_id: int) -> None:
        """The enclave wipes the query's keys and authorizations; the id stops working."""
        self._binding.end_query(query_id)

    @contextmanager
    def query(self, session_id: int, package: bytes, statement_text: str) -> Iterator[int]:
        """begin_query ... end_query around a block, ending the query on every exit path.

        (No doctest: it needs a client-built package.)
        """
        query_id = self.begin_query(session_id, package, statement_text)
        try:
            yield query_id
        finally:
            self.end_query(query_id)

    # --- operators: pass-through, whole Arrow arrays per call ----------------------------------

    def compare(
        self,
        query_id: int,
        cek_id: int,
        type_code: int,
        operator: int,
        constant: bytes,
        cells: Any,
        right: Any = None,
    ) -> Any:
        """EQ..GE, BETWEEN, IN or LIKE over a cell array: a BooleanArray, null for NULL rows."""
        return self._binding.enclave_compare(
            query_id, cek_id, type_code, operator, constant, cells, right
        )

    def filter(
        self, query_id: int, predicates: Sequence[tuple[int, int, int, bytes]], columns: Any
    ) -> Any:
        """The AND of (cek_id, type_code, operator, constant) predicates over their columns, in
        one pass per predicate over the rows not yet FALSE: a BooleanArray, null = unknown."""
        return self._binding.enclave_filter(query_id, predicates, columns)

    def rank(self, query_id: int, cek_id: int, type_code: int, cells: Any) -> Any:
        """Dense ascending ranks from 0 (Int64Array; null for NULL cells)."""
        return self._binding.enclave_rank(query_id, cek_id, type_code, cells)

    def top_k(self, query_id: int, cek_id: int, type_code: int, constant: bytes, cells: Any) -> Any:
        """The first k rows of an ORDER BY (constant: k, direction, NULLS placement): dense
        ranks among the selected rows, null for a selected NULL cell, -1 for the others."""
        return self._binding.enclave_top_k(query_id, cek_id, type_code, constant, cells)

    def group(self, query_id: int, cek_id: int, type_code: int, cells: Any) -> Any:
        """Dense group ids, equal values to equal ids (Int64Array; null for NULL cells)."""
        return self._binding.enclave_group(query_id, cek_id, type_code, cells)

    def aggregate_expression(
        self,
        query_id: int,
        cek_id: int,
        type_code: int,
        operator: int,
        program: bytes,
        slots: Any,
        group_ids: Any,
        group_count: int,
    ) -> Any:
        """SUM_EXPR or AVG_EXPR per group over the slots' rows: one randomized cell per group."""
        return self._binding.enclave_aggregate_expression(
            query_id, cek_id, type_code, operator, program, slots, group_ids, group_count
        )

    def aggregate_stage(
        self,
        query_id: int,
        layout: bytes,
        slots: Any,
        group_ids: Any,
        group_count: int,
        output_count: int,
    ) -> Any:
        """Every SUM, AVG, SUM_EXPR and AVG_EXPR of a stage in one call (enclave.h 5d): one list
        of randomized cells per output, one cell per group; each slot is decrypted once."""
        return self._binding.enclave_aggregate_stage(
            query_id, layout, slots, group_ids, group_count, output_count
        )

    def aggregate(
        self,
        query_id: int,
        cek_id: int,
        type_code: int,
        operator: int,
        cells: Any,
        group_ids: Any,
        group_count: int,
        decimal_scale: int = 0,
    ) -> Any:
        """SUM, AVG, MIN, MAX or COUNT_DISTINCT per group: one randomized cell per group."""
        return self._binding.enclave_aggregate(
            query_id, cek_id, type_code, operator, cells, group_ids, group_count, decimal_scale
        )

    def reencrypt(
        self, query_id: int, cek_id: int, type_code: int, constant: bytes, cells: Any
    ) -> Any:
        """Cells under the target key named in the constant (u16 cek id || u8 mode)."""
        return self._binding.enclave_reencrypt(query_id, cek_id, type_code, constant, cells)

    def encrypt(
        self, query_id: int, cek_id: int, type_code: int, constant: bytes, plaintexts: Any
    ) -> Any:
        """Cells from normalized plaintexts (in-place encryption of a plaintext column)."""
        return self._binding.enclave_encrypt(query_id, cek_id, type_code, constant, plaintexts)

"""A client stand-in for enclave tests: opens a session, derives its key, seals packages.

It writes the package of enclave.h (ee_enclave_begin_query) with struct and the codec's cell,
apart from engine.client.enclave_package, so a bug in one cannot hide in the other. Test code
only: engine/ and enclave/ must not import it, and its keys are throwaway.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
from cryptography.hazmat.primitives import serialization

from enclave import binding
from enclave.attestation.evidence import parse_evidence
from engine.client.session_key import derive_session_key, new_client_ecdh_key

# The six comparison operators of the enclave, each with the SQL a DuckDB oracle runs.
COMPARISONS = [
    (binding.OP_EQ, "="),
    (binding.OP_NE, "<>"),
    (binding.OP_LT, "<"),
    (binding.OP_LE, "<="),
    (binding.OP_GT, ">"),
    (binding.OP_GE, ">="),
]

# (cek_id, operator, type_code, constant blob)
Grant = tuple[int, int, int, bytes]


def statement_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-16-le")).digest()


def keys_blob(
    counter: int,
    statement: str,
    keys: Sequence[tuple[int, bytes]],
    grants: Iterable[Grant],
) -> bytes:
    grant_list = list(grants)
    blob = os.urandom(16) + struct.pack("<q", counter) + statement_hash(statement)
    blob += struct.pack("<H", len(keys))
    for cek_id, cek in keys:
        blob += struct.pack("<I", 0) + bytes(8) + struct.pack("<H", cek_id) + cek
    blob += struct.pack("<H", len(grant_list))
    for cek_id, operator, type_code, constant in grant_list:
        blob += struct.pack("<HBB", cek_id, operator, type_code)
        blob += hashlib.sha256(constant).digest()
    return blob


def seal(session_key: bytes, blob: bytes) -> bytes:
    with binding.CellKey(session_key) as key:
        cell = binding.encrypt_cells(key, pa.array([blob], pa.binary()), deterministic=False)[0]
    value = cell.as_py()
    assert isinstance(value, bytes)
    return value


class Client:
    """One enclave session seen from the client, with a package counter."""

    def __init__(self, platform_dir: str | Path, nonce: bytes | None = None) -> None:
        self.client_key = new_client_ecdh_key()
        self.nonce = nonce if nonce is not None else os.urandom(32)
        point = self.client_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.session_id, self.evidence = binding.open_session(self.nonce, point, platform_dir)
        self.parsed = parse_evidence(self.evidence)
        self.session_key = bytes(derive_session_key(self.client_key, self.parsed.ecdh_public))
        self.counter = 0

    def package(
        self,
        statement: str,
        keys: Sequence[tuple[int, bytes]],
        grants: Iterable[Grant],
        *,
        counter: int | None = None,
        session_id: int | None = None,
    ) -> bytes:
        if counter is None:
            self.counter += 1
            counter = self.counter
        blob = keys_blob(counter, statement, keys, grants)
        sid = self.session_id if session_id is None else session_id
        return struct.pack("<Q", sid) + seal(self.session_key, blob)

    def begin(
        self, statement: str, keys: Sequence[tuple[int, bytes]], grants: Iterable[Grant]
    ) -> int:
        package = self.package(statement, keys, grants)
        return binding.begin_query(self.session_id, package, statement_hash(statement))

    def close(self) -> None:
        binding.close_session(self.session_id)

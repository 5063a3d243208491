"""The engine's own log records (engine.log) at DEBUG, over the feature tour: each logger speaks,
and no record holds a canary plaintext, a SQL literal (even a plaintext column's) or a key."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine import log
from tests.security.feature_tour import make_key_files, open_recording_connection, run_feature_tour
from tests.support.canaries import find_leaks
from tests.support.keys import CEK1_ENCLAVE_KEYS, make_cmk


class _Collect(logging.Handler):
    """Each record as text: the formatted message, its raw arguments and any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        text = f"{record.name} {record.levelname} {record.getMessage()} {record.args!r}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture()
def engine_records() -> Iterator[_Collect]:
    handler = _Collect()
    saved = (log.ROOT.level, log.ROOT.propagate)
    log.ROOT.addHandler(handler)
    log.ROOT.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.ROOT.removeHandler(handler)
        log.ROOT.setLevel(saved[0])


def test_logger_names_are_the_documented_ones() -> None:
    names = [logger.name for logger in (log.ROOT, log.HOST, log.ENCLAVE, log.KEYS)]
    assert names == ["enclavesql", "enclavesql.host", "enclavesql.enclave", "enclavesql.keys"]


def test_debug_logs_of_the_feature_tour_hold_no_canary_or_literal(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, engine_records: _Collect
) -> None:
    key_dir = make_key_files(tmp_path_factory.mktemp("log-keys"))
    connection, _ = open_recording_connection(str(tmp_path / "tour.duckdb"), key_dir)
    tour = run_feature_tour(connection)
    connection.close()

    # Positive controls: every logger spoke, at the phases it covers.
    by_logger = {record.name for record in engine_records.records}
    assert {"enclavesql", "enclavesql.host", "enclavesql.keys"} <= by_logger
    text = "\n".join(engine_records.lines)
    assert "describe: client cache miss" in text and "describe: host cache miss" in text
    assert "describe: client cache hit" in text or "describe: host cache hit" in text
    assert "from its key store (unwrapped)" in text and "from the CEK cache" in text
    assert "CreateCmk(" in text and "RegisterEncryptedColumn(tour_det, c_int" in text
    if "enclave" not in " ".join(tour.skipped):
        assert "enclave query begin" in text and "enclave query end" in text
    assert len(tour.book.canaries) >= 150

    assert find_leaks(tour.book.canaries, {"engine log records": text.encode("utf-8")}) == []
    # Not even a plaintext column's literal: records never carry SQL text.
    for control in tour.plain_controls:
        assert control not in text


@pytest.mark.filterwarnings("ignore::engine.client.enclave_session.InsecureEnclaveWarning")
def test_an_enclave_query_logs_its_begin_and_end_without_values(
    tmp_path: Path, engine_records: _Collect
) -> None:
    make_cmk(tmp_path)
    canary = "CANARY-" + secrets.token_hex(8)
    with engine.connect(":memory:", key_dir=str(tmp_path), attestation_protocol="none") as con:
        for statement in CEK1_ENCLAVE_KEYS:
            con.execute(statement)
        con.execute(
            "CREATE TABLE t (s VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, "
            "ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'))"
        )
        con.execute(f"INSERT INTO t VALUES ('{canary}')")
        assert con.execute(f"SELECT count(*) FROM t WHERE s >= '{canary}'").fetchall() == [(1,)]
        assert con.execute("SELECT max(s) FROM t").fetchall() == [(canary,)]
    text = "\n".join(engine_records.lines)
    assert "enclavesql.enclave DEBUG enclave query begin: 1 operation(s)" in text
    assert "enclavesql.enclave DEBUG enclave query end: 1 operation(s)" in text
    assert canary not in text

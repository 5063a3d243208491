"""Canary scans over the whole DB-API surface: the feature tour writes a fresh canary for every
plaintext of every encrypted column type, then every place the host or a bystander can read is
searched in UTF-8, UTF-16LE and normalized form: the DuckDB WAL before its checkpoint, the file
after it, each call the host layer received, every error message and traceback (hidden contexts
included), every log record at DEBUG, the REPL's error output and its history file.

Each place also has a positive control (a plaintext the scan must find there), so a scan that
looks at the wrong bytes fails instead of passing. See tests/security/feature_tour.py.
"""

from __future__ import annotations

import doctest
import importlib
import io
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from engine.host.recording import RecordingHost
from engine.repl.app import _interactive
from engine.repl.app import main as repl_main
from engine.repl.history import may_remember
from engine.repl.shell import Shell
from tests.security import feature_tour
from tests.security.feature_tour import (
    make_key_files,
    open_recording_connection,
    run_feature_tour,
    sql_literal,
)
from tests.support.canaries import CanaryBook, exception_texts, find_leaks

# Keeps every change in the WAL until the database is opened again: the WAL is scanned as the
# host would find it after a crash, before any checkpoint folds it into the file.
KEEP_WAL = ("PRAGMA disable_checkpoint_on_shutdown", "SET checkpoint_threshold = '1GB'")


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key_files(tmp_path_factory.mktemp("tour-keys"))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


@pytest.fixture()
def log_records() -> Iterator[_Records]:
    """Every record of every logger at DEBUG, whatever level a library set for itself."""
    handler = _Records()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    saved = [(logger, logger.level, logger.propagate) for logger in [root, *loggers]]
    root.addHandler(handler)
    for logger in [root, *loggers]:
        logger.setLevel(logging.DEBUG)
        logger.propagate = True
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, propagate in saved:
            logger.setLevel(level)
            logger.propagate = propagate


def _host_input(hosts: list[RecordingHost]) -> bytes:
    """Everything the hosts received, as bytes: pickle keeps str as UTF-8 and bytes raw, and
    Arrow tables pickle with their buffers."""
    parts = []
    for host in hosts:
        for call in host.calls:
            parts.append(pickle.dumps(call.arguments))
            parts.append(repr(call.arguments).encode("utf-8", "backslashreplace"))
    return b"".join(parts)


def _run_interactive(shell: Shell, history: Path, lines: list[str]) -> None:
    """The interactive prompt, fed ``lines`` as if typed (Enter after each), then .quit."""
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for line in [*lines, ".quit"]:
            pipe.send_text(line + "\r")
        _interactive(shell, history, False)


def _repl_script(book: CanaryBook, start: int) -> list[str]:
    """Statements a REPL user might type, each with fresh canaries aimed at encrypted columns,
    plus one syntax error and one plaintext statement (the history's positive control)."""
    lookup = sql_literal(book.new("varchar", f"repl-{start}-lookup"))
    name = sql_literal(book.new("nvarchar", f"repl-{start}-insert"))
    number = book.new("bigint", f"repl-{start}-insert")
    broken = sql_literal(book.new("varchar", f"repl-{start}-syntax"))
    return [
        f"SELECT id FROM tour_det WHERE c_varchar = {lookup};",
        f"INSERT INTO tour_det (id, note, c_nvarchar, c_bigint) VALUES ({start}, 'repl', "
        f"{name}, {number});",
        f"INSERT INTO tour_det (id, c_varchar) VALUES ({start + 1}, {broken};",
        f"SELECT count(*) AS plain_control_{start} FROM tour_det;",
    ]


def test_no_canary_leaks_anywhere_after_the_feature_tour(
    tmp_path: Path, key_dir: Path, log_records: _Records, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "tour.duckdb"
    wal = Path(f"{database}.wal")
    connection, host = open_recording_connection(str(database), key_dir)
    for pragma in KEEP_WAL:
        connection.execute(pragma)
    logging.getLogger("engine").debug("PLAIN-CONTROL-log")  # the capture itself works
    tour = run_feature_tour(connection)
    book = tour.book
    connection.close()

    assert wal.exists(), "the WAL was checkpointed away; the pre-checkpoint scan saw nothing"
    wal_bytes = wal.read_bytes()

    # The REPL: once with -c (its error output is scanned), once at the interactive prompt with
    # a history file, both through recording hosts.
    feature_tour.RECORDERS.clear()
    history = tmp_path / "history"
    connect = [
        "--key-dir",
        str(key_dir),
        "--connect",
        "tests.security.feature_tour:connect_recording",
    ]
    script = _repl_script(book, 500)
    script_history = tmp_path / "script-history"
    status = repl_main(
        [str(database), *connect, "--history", str(script_history), "--bail", "off", "--debug"]
        + ["-c", "\n".join(script)]
    )
    assert status == 1, "the REPL script's syntax error should make it exit with 1"
    repl_output = capsys.readouterr()
    assert "syntax error" in repl_output.err
    repl_connection = feature_tour.connect_recording(str(database), key_dir=str(key_dir))
    shell = Shell(repl_connection, out=io.StringIO(), err=io.StringIO(), interactive=True)
    typed = _repl_script(book, 600)
    _run_interactive(shell, history, typed)
    shell_err = shell._err.getvalue()  # type: ignore[attr-defined]
    repl_connection.close()
    history_text = history.read_text(encoding="utf-8")

    # The rows the REPL inserted are there and decrypt: the REPL really ran the statements.
    with feature_tour.connect_recording(str(database), key_dir=str(key_dir)) as check:
        got = dict(check.execute("SELECT id, c_bigint FROM tour_det WHERE id IN (500, 600)"))
    repl_numbers = {c.label: c.value for c in book.canaries if c.kind == "bigint"}
    assert got == {500: repl_numbers["repl-500-insert"], 600: repl_numbers["repl-600-insert"]}

    # Opening the file with plain DuckDB folds the WAL into it (DuckDB checkpoints on close).
    duckdb.connect(str(database)).close()
    assert not wal.exists()
    file_bytes = database.read_bytes()

    places: dict[str, bytes] = {
        "the WAL before checkpoint": wal_bytes,
        "the database file": file_bytes,
        "the host's input": _host_input([host, *feature_tour.RECORDERS]),
        "error messages and tracebacks": "\n".join(
            exception_texts(error) for _, error in tour.errors
        ).encode("utf-8"),
        "log records": "\n".join(log_records.lines).encode("utf-8"),
        "the REPL's error output": (repl_output.err + shell_err).encode("utf-8"),
        "the REPL's history file": history_text.encode("utf-8"),
        "the history file of the -c run": (
            script_history.read_bytes() if script_history.exists() else b""
        ),
    }
    # Positive controls: each place holds what it should, so the scan reads the right bytes.
    control = tour.plain_controls[0].encode("utf-8")
    for place in ("the WAL before checkpoint", "the database file", "the host's input"):
        assert control in places[place], f"the plaintext control is missing from {place}"
    assert b"tour_det.c_int" in places["error messages and tracebacks"]
    assert b"Traceback" in places["error messages and tracebacks"]
    assert b"PLAIN-CONTROL-log" in places["log records"]
    assert b"Traceback" in places["the REPL's error output"]
    assert "plain_control_600" in history_text
    assert len(tour.errors) >= 10 and len(book.canaries) >= 150

    assert find_leaks(book.canaries, places) == []


def test_hidden_exception_contexts_hold_no_canary(tmp_path: Path, key_dir: Path) -> None:
    """Not even a context hidden by ``raise … from None`` keeps a value: the exception object
    would keep it alive for any error reporter or debugger that walks ``__context__``."""
    connection, _host = open_recording_connection(str(tmp_path / "hidden.duckdb"), key_dir)
    tour = run_feature_tour(connection)
    connection.close()
    hidden = "\n".join(exception_texts(e, include_hidden=True) for _, e in tour.errors)
    assert find_leaks(tour.book.canaries, {"hidden contexts": hidden.encode("utf-8")}) == []


def test_the_scans_find_a_plaintext_leak(tmp_path: Path, key_dir: Path) -> None:
    """The same scans find canaries written to a plaintext column, in every place where the host
    keeps them, so a real leak would be found."""
    database = tmp_path / "leak.duckdb"
    connection, host = open_recording_connection(str(database), key_dir)
    for pragma in KEEP_WAL:
        connection.execute(pragma)
    book = CanaryBook()
    connection.execute("CREATE TABLE plain (id INTEGER, v VARCHAR, n BIGINT)")
    connection.execute(
        "INSERT INTO plain VALUES (1, ?, ?)",
        [book.new("varchar", "plain-varchar"), book.new("bigint", "plain-bigint")],
    )
    connection.close()
    wal_bytes = Path(f"{database}.wal").read_bytes()
    duckdb.connect(str(database)).close()
    places = {
        "wal": wal_bytes,
        "file": database.read_bytes(),
        "host": _host_input([host]),
    }
    leaks = find_leaks(book.canaries, places)
    for place in places:
        # A VARCHAR's normalized form is its UTF-8, so the scan reports it once, as normalized.
        assert f"plain-varchar VARCHAR (normalized) in {place}" in leaks
    # DuckDB may compress an integer in the file itself; the WAL and the host see it whole.
    for place in ("wal", "host"):
        assert f"plain-bigint BIGINT (normalized) in {place}" in leaks


def test_history_keeps_what_holds_no_encrypted_literal(tmp_path: Path, key_dir: Path) -> None:
    """The history filter drops only input with a literal aimed at an encrypted column (or
    input it cannot describe that names an encrypted table), and keeps the rest."""
    database = tmp_path / "history.duckdb"
    connection, _host = open_recording_connection(str(database), key_dir)
    run_feature_tour(connection)
    connection.close()
    book = CanaryBook()
    secret = sql_literal(book.new("varchar", "history-secret"))
    plain = sql_literal(book.new("varchar", "history-plain"))
    repl_connection = feature_tour.connect_recording(str(database), key_dir=str(key_dir))
    shell = Shell(repl_connection, out=io.StringIO(), err=io.StringIO(), interactive=True)
    catalog = shell.catalog()
    cases: dict[str, bool] = {
        f"SELECT id FROM tour_det WHERE c_varchar = {secret};": False,
        f"UPDATE tour_rand SET c_varchar = {secret} WHERE id = 1;": False,
        f"SELECT id FROM tour_det WHERE c_varchar = {secret} AND AND;": False,
        f"SELECT id FROM tour_det WHERE note = {plain};": True,
        "SELECT id FROM tour_det WHERE c_varchar = ?;": True,
        f"SELECT {plain} AS typo FROM nowhere WHERE AND;": True,
        ".tables": True,
    }
    assert {text: may_remember(text, catalog) for text in cases} == cases
    history = tmp_path / "history"
    _run_interactive(shell, history, list(cases))
    repl_connection.close()
    text = history.read_text(encoding="utf-8")
    for typed, kept in cases.items():
        assert (typed in text) == kept, f"history {'lost' if kept else 'kept'}: {typed[:40]}"


@pytest.mark.parametrize(
    "name", ["tests.support.canaries", "tests.security.feature_tour", "engine.repl.history"]
)
def test_doctests(name: str) -> None:
    results = doctest.testmod(importlib.import_module(name))
    assert results.attempted > 0 and results.failed == 0


def test_explain_of_a_lifted_literal_stays_out_of_history() -> None:
    from engine.repl.history import may_remember
    from tests.sql.fixtures.catalog import CATALOG

    table = next(t for t in CATALOG.tables if t.encrypted)
    column = next(
        c for c in table.columns if c.encryption and c.encryption.encryption_type == "DETERMINISTIC"
    )
    statement = f"SELECT 1 FROM {table.name} WHERE {column.name} = 'CANARY-EXPLAIN'"
    assert not may_remember(statement, CATALOG)
    assert not may_remember(".explain " + statement, CATALOG)
    assert may_remember(".explain SELECT 42", CATALOG)

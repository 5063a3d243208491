"""The interactive shell in a real terminal: tmux runs `enclavesql`, the test types into it with
send-keys and reads the screen with capture-pane, polling against a deadline.

Skips when tmux is not installed (`make system-deps` installs it) or engine.connect is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import engine

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(not hasattr(engine, "connect"), reason="engine.connect is not written yet"),
]


class Terminal:
    """One tmux session on a private server socket, so no other tmux user is touched."""

    def __init__(self, command: str, environment: dict[str, str]) -> None:
        self.socket = f"enclavesql-test-{uuid.uuid4().hex[:8]}"
        self.environment = environment
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "repl", command)

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args],
            env=self.environment,
            capture_output=True,
            text=True,
            check=check,
            timeout=20,
        )

    def type(self, text: str) -> None:
        # tmux reads an argument that ends in ";" as a command separator; "\;" is a literal one.
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        self.tmux("send-keys", "-t", "repl", "-l", text)

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "repl", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "repl").stdout

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "repl", check=False).returncode == 0

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if condition(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{screen}")

    def close(self) -> None:
        self.tmux("kill-server", check=False)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    database = tmp_path / "shell.duckdb"
    with engine.connect(str(database)) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER, name VARCHAR)")
        connection.execute("INSERT INTO patients VALUES (1, 'Ann'), (2, 'Bob')")
    environment = {
        **os.environ,
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    command = (
        f"cd {ROOT} && {sys.executable} -m engine.cli {database} "
        f"--history {tmp_path / 'history'}; echo shell-exited-with-$?; sleep 60"
    )
    screen = Terminal(command, environment)
    try:
        yield screen
    finally:
        screen.close()


def _after(screen: str, marker: str) -> str:
    """The screen from the last ``marker`` on; empty while the marker has not appeared."""
    index = screen.rfind(marker)
    return screen[index:] if index >= 0 else ""


def test_interactive_session(terminal: Terminal, tmp_path: Path) -> None:
    # capture-pane drops trailing blanks, so the prompt reads "enclavesql>".
    terminal.wait_for(lambda s: "enclavesql>" in s, "the prompt")

    # A statement over three lines: Enter continues until the `;`.
    terminal.type("SELECT name,")
    terminal.press("Enter")
    terminal.wait_for(lambda s: "...>" in s, "the continuation prompt")
    terminal.type("  id FROM patients")
    terminal.press("Enter")
    terminal.type("WHERE id = 2;")
    terminal.press("Enter")
    screen = terminal.wait_for(lambda s: "1 row" in s, "the result of the multi-line query")
    result = _after(screen, "WHERE id = 2;")
    assert "│ Bob  │  2 │" in result
    assert "Ann" not in result

    # Tab completes the table name from the catalog.
    terminal.type("SELECT count(*) AS total FROM pati")
    terminal.press("Tab")
    # Completions are computed in the background, so wait for this line to change.
    terminal.wait_for(
        lambda s: "AS total FROM patients" in s, "the completed table name", timeout=15
    )
    terminal.type(";")
    terminal.press("Enter")
    screen = terminal.wait_for(lambda s: "│ total │" in s, "the count")
    assert "│     2 │" in _after(screen, "│ total │")

    # .explain says where the statement runs, without an error.
    terminal.type(".explain SELECT * FROM patients WHERE id = 1")
    terminal.press("Enter")
    screen = terminal.wait_for(lambda s: "DuckDB" in _after(s, ".explain"), "the .explain answer")
    assert "Error" not in _after(screen, ".explain")

    # A syntax error is one line, without a traceback.
    terminal.type("SELECT FROM WHERE;")
    terminal.press("Enter")
    screen = terminal.wait_for(lambda s: "Error (ProgrammingError)" in s, "the error line")
    error_lines = [line for line in screen.splitlines() if line.startswith("Error (")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith("Error (ProgrammingError): syntax error at line 1, column ")
    assert "Traceback" not in screen

    terminal.type(".quit")
    terminal.press("Enter")
    terminal.wait_for(lambda s: "shell-exited-with-0" in s, "the shell to exit with status 0")

    # The history file keeps what was typed, multi-line statements as one entry.
    history = (tmp_path / "history").read_text(encoding="utf-8")
    assert "+SELECT name,\n+  id FROM patients\n+WHERE id = 2;" in history

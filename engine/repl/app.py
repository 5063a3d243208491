"""`enclavesql [DATABASE] [options]`: open a connection, then run `-c`, a piped script, or the
interactive prompt_toolkit session (multi-line input, history, completion, SQL highlighting).

It wires options, connection and Shell together; SQL execution and output formatting live in the
Shell, so this module must not grow logic that scripts and tests would bypass.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import Error
from engine.repl.history import open_history
from engine.repl.options import open_connection, parse_options
from engine.repl.shell import Shell, error_line
from engine.repl.statements import is_complete

__all__ = ["main", "history_path", "should_submit"]

PROMPT = "enclavesql> "
CONTINUATION = "       ...> "


def history_path(explicit: str | None = None, environ: dict[str, str] | None = None) -> Path:
    """Where the prompt keeps its history: ``--history``, else under $XDG_STATE_HOME, else home.

    >>> str(history_path(environ={"XDG_STATE_HOME": "/state"}))
    '/state/enclavesql/history'
    >>> str(history_path("h.txt"))
    'h.txt'
    """
    if explicit:
        return Path(explicit).expanduser()
    environ = dict(os.environ) if environ is None else environ
    state = environ.get("XDG_STATE_HOME")
    if state:
        return Path(state) / "enclavesql" / "history"
    return Path.home() / ".enclavesql_history"


def should_submit(text: str) -> bool:
    """Whether Enter runs the input: a dot command, an empty line, or complete statements.

    >>> should_submit(".tables"), should_submit("SELECT 1"), should_submit("SELECT 1;")
    (True, False, True)
    """
    stripped = text.strip()
    return not stripped or stripped.startswith(".") or is_complete(text)


def _session(shell: Shell, history_file: Path) -> Any:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    from engine.repl.completion import SqlCompleter

    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event: Any) -> None:
        buffer = event.current_buffer
        if buffer.complete_state is not None and buffer.complete_state.current_completion:
            buffer.apply_completion(buffer.complete_state.current_completion)
            return
        if should_submit(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    history: Any
    try:
        history_file.parent.mkdir(parents=True, exist_ok=True)
        history_file.touch(exist_ok=True)
        # Input that holds a literal aimed at an encrypted column never reaches the file.
        history = open_history(str(history_file), shell.catalog)
    except OSError:
        # A read-only home must not stop the shell; history then lasts for this session only.
        history = InMemoryHistory()
    return PromptSession(
        message=PROMPT,
        multiline=True,
        prompt_continuation=CONTINUATION,
        key_bindings=bindings,
        lexer=PygmentsLexer(SqlLexer),
        completer=SqlCompleter(shell.catalog),
        complete_while_typing=False,
        history=history,
    )


def _interactive(shell: Shell, history_file: Path, no_decrypt: bool) -> int:
    print("EnclaveSQL shell. Statements end with ';'. Type .help for commands, .quit to leave.")
    if no_decrypt:
        print("Column encryption is off: encrypted columns show ciphertext as 0x….")
    session = _session(shell, history_file)
    while not shell.quit_requested:
        try:
            text = session.prompt()
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        shell.run_input(text)
    return 0


def warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """Warnings at the shell read like its errors: one line, no source location.

    >>> warning_line("keys go to an unverified enclave", UserWarning, "x.py", 1)
    'Warning (UserWarning): keys go to an unverified enclave\\n'
    """
    return f"Warning ({category.__name__}): {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the shell with command-line arguments ``argv``; returns the process exit status:
    0 on success, 1 when a statement or command failed, 2 for bad options."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    if not options.debug:
        warnings.formatwarning = warning_line
    try:
        connection = open_connection(options)
    except Error as error:
        print(error_line(error), file=sys.stderr)
        return 1
    interactive = options.command is None and sys.stdin.isatty()
    shell = Shell(
        connection,
        mode=options.mode,
        max_rows=options.max_rows,
        bail=options.bail == "on",
        debug=options.debug,
        interactive=interactive,
    )
    try:
        if options.command is not None:
            return 0 if shell.run_script(options.command.splitlines(keepends=True)) else 1
        if not interactive:
            return 0 if shell.run_script(sys.stdin) else 1
        return _interactive(shell, history_path(options.history), options.no_decrypt)
    finally:
        shell.close()
        connection.close()

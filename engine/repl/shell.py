"""The shell's core without a terminal: run SQL and dot commands on a connection, write results in
the current mode, report errors as one line, and track settings (`.mode`, `.timer`, `.output`).

It is I/O-free apart from the streams it is handed, so scripts, `-c` and tests drive it directly;
it must not know about prompt_toolkit or print a traceback unless debugging was asked for.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from engine.repl.commands import CommandError, parse_command
from engine.repl.formatting import ResultSet, render, status_line
from engine.repl.introspection import encrypted_flags, read_catalog
from engine.repl.options import DEFAULT_MAX_ROWS
from engine.repl.statements import split_statements
from engine.sql.catalog import CatalogSnapshot

__all__ = ["Shell", "error_line"]

# Rows are fetched in vector-sized chunks when only counting what table mode leaves out.
_COUNT_BATCH = 2048


class _AlreadyReported(Exception):
    """A nested script (`.read`) failed; its error line is already written."""


def error_line(error: BaseException) -> str:
    """The one line the shell prints for an error: its class and the first line of its message.

    >>> from engine.errors import ProgrammingError
    >>> error_line(ProgrammingError("syntax error at line 1, column 8: bad\\nLINE 1: ..."))
    'Error (ProgrammingError): syntax error at line 1, column 8: bad'
    >>> error_line(CommandError("unknown command .x; .help lists the commands"))
    'Error: unknown command .x; .help lists the commands'
    """
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else "no message"
    if isinstance(error, CommandError):
        return f"Error: {message}"
    return f"Error ({type(error).__name__}): {message}"


class Shell:
    """Runs input against one DB-API connection and writes to ``out`` (results) and ``err``.

    >>> import io
    >>> import duckdb
    >>> out = io.StringIO()
    >>> shell = Shell(duckdb.connect(), mode="csv", out=out)
    >>> shell.run_script(["SELECT 1 AS one;", ".mode json\\n", "SELECT 'a;' AS s;"])
    True
    >>> print(out.getvalue(), end="")
    one
    1
    [{"s": "a;"}]
    """

    def __init__(
        self,
        connection: Any,
        *,
        mode: str = "table",
        max_rows: int = DEFAULT_MAX_ROWS,
        bail: bool = True,
        debug: bool = False,
        interactive: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.connection = connection
        self.mode = mode
        self.max_rows = max_rows
        self.bail = bail
        self.debug = debug
        self.interactive = interactive
        self.timer = False
        self.quit_requested = False
        self._stdout = out if out is not None else sys.stdout
        self._output: TextIO = self._stdout
        self._err = err if err is not None else sys.stderr
        self._catalog: CatalogSnapshot | None = None

    # Output.

    def write(self, text: str) -> None:
        self._output.write(text)
        self._output.flush()

    def redirect(self, path: str | None) -> None:
        """Send results to the file at ``path`` (truncated), or back to stdout when None."""
        if path is not None:
            try:
                target: TextIO = Path(path).expanduser().open("w", encoding="utf-8")
            except OSError as error:
                raise CommandError(
                    f"cannot write {path} ({error.strerror}); check the path"
                ) from None
        else:
            target = self._stdout
        self._close_output()
        self._output = target

    def _close_output(self) -> None:
        if self._output is not self._stdout:
            self._output.close()
            self._output = self._stdout

    def close(self) -> None:
        self._close_output()

    def report(self, error: BaseException) -> None:
        if self.debug:
            traceback.print_exception(error, file=self._err)
        self._err.write(error_line(error) + "\n")
        self._err.flush()

    # The catalog, read lazily and forgotten after anything that may have changed it.

    def catalog(self) -> CatalogSnapshot:
        if self._catalog is None:
            self._catalog = read_catalog(self.connection)
        return self._catalog

    def forget_catalog(self) -> None:
        self._catalog = None

    # Running input.

    def execute(self, sql: str) -> None:
        """Run one SQL statement and write its result; errors propagate to the caller."""
        started = time.perf_counter()
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            if cursor.description:
                self.write(render(self._collect(cursor, sql), self.mode))
            else:
                self.forget_catalog()
                if self.mode == "table":
                    self.write(status_line(cursor.rowcount) + "\n")
        finally:
            cursor.close()
        if self.timer:
            self.write(f"Run Time: {time.perf_counter() - started:.3f} s\n")

    def _collect(self, cursor: Any, sql: str) -> ResultSet:
        columns = tuple(str(column[0]) for column in cursor.description)
        flags = encrypted_flags(cursor, self.catalog, sql)
        if self.mode != "table":
            return ResultSet(columns, cursor.fetchall(), flags)
        rows = cursor.fetchmany(self.max_rows)
        more = 0
        while len(rows) == self.max_rows and (batch := cursor.fetchmany(_COUNT_BATCH)):
            more += len(batch)
        return ResultSet(columns, rows, flags, more)

    def run_command(self, line: str) -> None:
        """Run one dot command line; errors propagate to the caller."""
        command, args = parse_command(line)
        command.handler(self, args)

    def _attempt(self, action: Any, argument: str) -> bool:
        try:
            action(argument)
        except _AlreadyReported:
            return False
        except KeyboardInterrupt:
            self._err.write("Interrupted\n")
            return False
        except Exception as error:  # noqa: BLE001 - every failure becomes one reported line
            self.report(error)
            return False
        return True

    def run_script(self, lines: Iterable[str]) -> bool:
        """Run lines of SQL and dot commands; True when everything succeeded.

        A dot command is a line that starts with `.` while no statement is pending. Statements
        end at `;`; a final statement without one still runs. With ``bail`` the first error
        stops the script.
        """
        ok = True
        pending = ""
        for line in lines:
            if self.quit_requested:
                return ok
            if not pending.strip() and line.lstrip().startswith("."):
                succeeded = self._attempt(self.run_command, line)
            else:
                split = split_statements(pending + line)
                pending = split.remainder + "\n" if split.remainder else ""
                succeeded = True
                for statement in split.statements:
                    succeeded = self._attempt(self.execute, statement)
                    if not succeeded and self.bail:
                        break
            ok = ok and succeeded
            if not succeeded and self.bail:
                return False
        if pending.strip() and not self.quit_requested:
            ok = self._attempt(self.execute, pending.strip()) and ok
        return ok

    def run_nested_script(self, lines: Iterable[str]) -> None:
        """`.read`: run a script inside the current one, failing the command when it fails."""
        if not self.run_script(lines):
            raise _AlreadyReported()

    def run_input(self, text: str) -> bool:
        """One submission at the interactive prompt (a dot command or complete statements)."""
        return self.run_script(text.splitlines(keepends=True))

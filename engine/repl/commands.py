"""The shell's dot commands (`.help`, `.tables`, `.schema`, …): parsing a line and running it.

Each handler works through the Shell it is given and the connection's PEP 249 surface; it must
never print key material (only provider names and redacted key paths) or any cell value it did not
fetch through a query.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.client.keystores.pkcs11_uri import redact_pkcs11_uri
from engine.errors import InterfaceError
from engine.repl.formatting import MODES, ResultSet, render, render_value
from engine.sql.catalog import ColumnInfo, TableInfo

if TYPE_CHECKING:
    from engine.repl.shell import Shell

__all__ = ["COMMANDS", "CommandError", "DotCommand", "parse_command", "schema_sql"]


class CommandError(InterfaceError):
    """A dot command was misused: unknown name, wrong arguments, or a file that cannot be read."""


@dataclass(frozen=True)
class DotCommand:
    """One dot command. ``raw`` commands get the rest of the line verbatim (SQL), not words."""

    name: str
    usage: str
    summary: str
    handler: Callable[[Shell, Any], None]
    raw: bool = False


def parse_command(line: str) -> tuple[DotCommand, Any]:
    """The command a line names and its arguments (a list of words, or text for raw commands).

    >>> command, args = parse_command(".mode csv")
    >>> command.name, args
    ('mode', ['csv'])
    >>> parse_command(".explain SELECT 'a b'")[1]
    "SELECT 'a b'"
    """
    text = line.strip()
    if not text.startswith("."):
        raise CommandError("a dot command starts with '.'; .help lists them")
    name, _, rest = text[1:].partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        raise CommandError(f"unknown command .{name}; .help lists the commands")
    if command.raw:
        return command, rest.strip()
    try:
        return command, shlex.split(rest)
    except ValueError:
        raise CommandError(f".{command.name}: unbalanced quotes in the arguments") from None


def _expect(command: str, args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        usage = COMMANDS[command].usage
        raise CommandError(f"wrong number of arguments; usage: {usage}")


def _help(shell: Shell, args: list[str]) -> None:
    _expect("help", args, 0, 0)
    width = max(len(command.usage) for command in COMMANDS.values())
    for command in COMMANDS.values():
        shell.write(f"{command.usage.ljust(width)}  {command.summary}\n")


def _tables(shell: Shell, args: list[str]) -> None:
    _expect("tables", args, 0, 0)
    for table in shell.catalog().tables:
        shell.write(table.name + "\n")


def _quote(name: str) -> str:
    """A name as it can be typed back: bare when it is a plain word (names are case-insensitive)."""
    if name.isascii() and name.isidentifier():
        return name
    return '"' + name.replace('"', '""') + '"'


def _column_sql(column: ColumnInfo) -> str:
    text = f"{_quote(column.name)} {column.declared_type}"
    if column.encryption is not None:
        text += (
            f" ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {_quote(column.encryption.cek_name)}, "
            f"ENCRYPTION_TYPE = {column.encryption.encryption_type}, "
            f"ALGORITHM = '{column.encryption.algorithm}')"
        )
    return text


def schema_sql(table: TableInfo) -> str:
    """A CREATE TABLE statement for ``table``, with the ENCRYPTED WITH clause of each encrypted
    column as the catalog records it.

    >>> from engine.sql.catalog import Encryption
    >>> ssn = ColumnInfo("ssn", "CHAR(11)", Encryption("cek1", "RANDOMIZED"))
    >>> print(schema_sql(TableInfo("t", (ColumnInfo("id", "INTEGER"), ssn))))  # doctest: +ELLIPSIS
    CREATE TABLE t (
        id INTEGER,
        ssn CHAR(11) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek1, ENCRYPTION_TYPE = RANDOMIZED...)
    );
    """
    columns = ",\n".join("    " + _column_sql(column) for column in table.columns)
    return f"CREATE TABLE {_quote(table.name)} (\n{columns}\n);"


def _schema(shell: Shell, args: list[str]) -> None:
    _expect("schema", args, 0, 1)
    tables = shell.catalog().tables
    if args:
        tables = tuple(table for table in tables if table.name.casefold() == args[0].casefold())
        if not tables:
            raise CommandError(f"no table named {args[0]!r}; .tables lists the tables")
    for table in tables:
        shell.write(schema_sql(table) + "\n")


def _keys(shell: Shell, args: list[str]) -> None:
    _expect("keys", args, 0, 0)
    catalog = shell.catalog()
    if not catalog.cmks and not catalog.ceks:
        shell.write("no column master keys or column encryption keys\n")
        return
    shell.write("Column master keys\n")
    cmk_rows = [
        (
            cmk.name,
            cmk.key_store_provider_name,
            redact_pkcs11_uri(cmk.key_path),
            cmk.allow_enclave_computations,
        )
        for cmk in catalog.cmks
    ]
    shell.write(
        render(
            ResultSet(("name", "provider", "key_path", "enclave_computations"), cmk_rows), "table"
        )
    )
    shell.write("Column encryption keys\n")
    cek_rows: list[tuple[Any, ...]] = []
    for cek in catalog.ceks:
        if not cek.values:
            # A CEK with no value left is still listed, with blanks where its CMK would be.
            cek_rows.append((cek.name, None, None))
        cek_rows += [(cek.name, value.cmk_name, value.algorithm) for value in cek.values]
    shell.write(render(ResultSet(("name", "column_master_key", "algorithm"), cek_rows), "table"))


def _show(shell: Shell, value: Any) -> None:
    shell.write(render_value(value))


def _explain(shell: Shell, sql: str) -> None:
    if not sql:
        raise CommandError(f"missing SQL; usage: {COMMANDS['explain'].usage}")
    explain = getattr(shell.connection, "explain", None)
    if explain is None:
        shell.write(".explain is not available yet: this connection has no explain()\n")
        return
    _show(shell, explain(sql.rstrip().rstrip(";")))


def _attest(shell: Shell, args: list[str]) -> None:
    _expect("attest", args, 0, 0)
    summary_of = getattr(shell.connection, "attestation_summary", None)
    summary = summary_of() if summary_of is not None else None
    if not summary:
        shell.write("no attested enclave on this connection\n")
        return
    _show(shell, summary)


def _on_off(command: str, args: list[str]) -> bool:
    _expect(command, args, 1, 1)
    if args[0].lower() not in ("on", "off"):
        raise CommandError(f"expected on or off; usage: {COMMANDS[command].usage}")
    return args[0].lower() == "on"


def _timer(shell: Shell, args: list[str]) -> None:
    shell.timer = _on_off("timer", args)


def _mode(shell: Shell, args: list[str]) -> None:
    _expect("mode", args, 0, 1)
    if not args:
        shell.write(f"current output mode: {shell.mode}\n")
        return
    if args[0].lower() not in MODES:
        raise CommandError(f"unknown mode {args[0]!r}; use one of {', '.join(MODES)}")
    shell.mode = args[0].lower()


def _read(shell: Shell, args: list[str]) -> None:
    _expect("read", args, 1, 1)
    path = Path(args[0]).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot read {args[0]} ({error.strerror}); check the path") from None
    shell.run_nested_script(text.splitlines(keepends=True))


def _output(shell: Shell, args: list[str]) -> None:
    _expect("output", args, 0, 1)
    shell.redirect(args[0] if args else None)


def _quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _import(shell: Shell, args: list[str]) -> None:
    _expect("import", args, 2, 2)
    path, table = Path(args[0]).expanduser(), args[1]
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as parquet

            data = parquet.read_table(path)
        else:
            import pyarrow.csv as pacsv

            data = pacsv.read_csv(path)
    except OSError as error:
        raise CommandError(f"cannot read {args[0]} ({error}); check the path and format") from None
    bulk_insert = getattr(shell.connection, "bulk_insert", None)
    if bulk_insert is not None:
        inserted = bulk_insert(table, data, progress=shell.interactive)
    else:
        inserted = _insert_batches(shell, table, data)
    count = data.num_rows if inserted is None or inserted < 0 else inserted
    shell.write(f"imported {count} row{'' if count == 1 else 's'} into {table}\n")
    shell.forget_catalog()


# One DuckDB vector per batch, the unit the engine encrypts in.
_IMPORT_BATCH = 2048


def _insert_batches(shell: Shell, table: str, data: Any) -> int:
    """INSERT the rows batch by batch through the DB-API, with a progress bar at a terminal."""
    columns = ", ".join(_quote_name(name) for name in data.column_names)
    marks = ", ".join("?" for _ in data.column_names)
    sql = f"INSERT INTO {_quote_name(table)} ({columns}) VALUES ({marks})"
    batches = data.to_batches(max_chunksize=_IMPORT_BATCH)
    cursor = shell.connection.cursor()
    try:
        if shell.interactive and batches:
            from prompt_toolkit.shortcuts import ProgressBar

            with ProgressBar(title=f"importing into {table}") as bar:
                for batch in bar(batches):
                    cursor.executemany(sql, [tuple(row.values()) for row in batch.to_pylist()])
        else:
            for batch in batches:
                cursor.executemany(sql, [tuple(row.values()) for row in batch.to_pylist()])
    finally:
        cursor.close()
    commit = getattr(shell.connection, "commit", None)
    if commit is not None:
        commit()
    return int(data.num_rows)


def _quit(shell: Shell, args: list[str]) -> None:
    _expect("quit", args, 0, 0)
    shell.quit_requested = True


def _exit(shell: Shell, args: list[str]) -> None:
    _expect("exit", args, 0, 0)
    shell.quit_requested = True


def _table_commands() -> dict[str, DotCommand]:
    commands = [
        DotCommand("help", ".help", "list the dot commands", _help),
        DotCommand("tables", ".tables", "list the tables", _tables),
        DotCommand(
            "schema", ".schema [TABLE]", "CREATE TABLE statements, with ENCRYPTED WITH", _schema
        ),
        DotCommand("keys", ".keys", "column master keys (provider, path) and CEKs", _keys),
        DotCommand(
            "explain", ".explain SQL", "where each operation of SQL runs", _explain, raw=True
        ),
        DotCommand("attest", ".attest", "the attested enclave: measurement, SVN, expiry", _attest),
        DotCommand("timer", ".timer on|off", "print the run time of each statement", _timer),
        DotCommand("mode", ".mode [" + "|".join(MODES) + "]", "set or show the output mode", _mode),
        DotCommand("read", ".read FILE", "run the statements and commands in FILE", _read),
        DotCommand("output", ".output [FILE]", "send results to FILE, or back to stdout", _output),
        DotCommand(
            "import", ".import FILE TABLE", "insert a CSV or Parquet file into TABLE", _import
        ),
        DotCommand("quit", ".quit", "leave the shell", _quit),
        DotCommand("exit", ".exit", "leave the shell", _exit),
    ]
    return {command.name: command for command in commands}


COMMANDS: dict[str, DotCommand] = _table_commands()

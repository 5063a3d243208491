"""Dot commands and the Shell core, against a plain-DuckDB stand-in for engine.connect."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as parquet
import pytest

from engine.repl.commands import COMMANDS, CommandError, parse_command
from engine.repl.shell import Shell
from tests.support.repl_adapter import AdapterConnection, connect, register_key_and_column


class Run:
    """A shell over a fresh in-memory database, with its output captured."""

    def __init__(self, connection: Any = None, **settings: Any) -> None:
        self.connection = connection if connection is not None else connect()
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.shell = Shell(self.connection, out=self.out, err=self.err, **settings)

    def __call__(self, *lines: str) -> bool:
        return self.shell.run_script(line + "\n" for line in lines)

    def take(self) -> str:
        text = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return text


@pytest.fixture
def run() -> Run:
    runner = Run()
    runner("CREATE TABLE patients (id INTEGER, ssn VARCHAR, name VARCHAR);")
    runner("INSERT INTO patients VALUES (1, '111', 'Ann'), (2, NULL, 'Bob');")
    register_key_and_column(
        runner.connection,
        table="patients",
        column="ssn",
        declared_type="CHAR(11)",
        key_path="pkcs11:token=t;object=cmk1?module-path=/m.so&pin-value=4711",
        provider="PKCS11",
    )
    runner.take()
    return runner


def test_parse_command_splits_words_and_keeps_raw_sql() -> None:
    command, args = parse_command('.read "my file.sql"')
    assert (command.name, args) == ("read", ["my file.sql"])
    command, args = parse_command(".EXPLAIN  SELECT 'a  b' ")
    assert (command.name, args) == ("explain", "SELECT 'a  b'")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (".nope", "unknown command .nope"),
        (".read 'open", "unbalanced quotes"),
        ("tables", "starts with '.'"),
    ],
)
def test_parse_command_refuses_bad_lines(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(line)


def test_help_lists_every_command(run: Run) -> None:
    assert run(".help")
    text = run.take()
    for command in COMMANDS.values():
        assert command.usage in text


def test_tables(run: Run) -> None:
    run("CREATE TABLE visits (id INTEGER);")
    run.take()
    assert run(".tables")
    assert run.take() == "patients\nvisits\n"


def test_schema_shows_encrypted_with_clauses(run: Run) -> None:
    assert run(".schema patients")
    assert run.take() == (
        "CREATE TABLE patients (\n"
        "    id INTEGER,\n"
        "    ssn CHAR(11) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = CEK1, "
        "ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'),\n"
        "    name VARCHAR\n"
        ");\n"
    )


def test_schema_of_an_unknown_table_is_an_error(run: Run) -> None:
    assert not run(".schema nowhere")
    assert run.err.getvalue() == "Error: no table named 'nowhere'; .tables lists the tables\n"


def test_keys_show_provider_and_redacted_path_but_no_pin(run: Run) -> None:
    assert run(".keys")
    text = run.take()
    assert "CMK1" in text and "PKCS11" in text and "CEK1" in text and "RSA_OAEP" in text
    assert "pin-value=***" in text
    assert "4711" not in text


def test_results_mark_encrypted_columns(run: Run) -> None:
    assert run("SELECT id, ssn FROM patients ORDER BY id;")
    assert run.take() == (
        "┌────┬──────┐\n"
        "│ id │ ssn* │\n"
        "├────┼──────┤\n"
        "│  1 │ 111  │\n"
        "│  2 │ NULL │\n"
        "└────┴──────┘\n"
        "2 rows  (* encrypted column)\n"
    )


def test_the_engine_answer_about_encryption_wins() -> None:
    class Marked(AdapterConnection):
        def cursor(self) -> Any:
            cursor = super().cursor()
            cursor.encrypted_columns = (True, False)  # type: ignore[attr-defined]
            return cursor

    runner = Run(Marked(":memory:"), mode="table")
    assert runner("SELECT 1 AS a, 2 AS b;")
    assert "│ a* │ b │" in runner.take()


def test_explain_without_the_extension_says_so(run: Run) -> None:
    assert run(".explain SELECT * FROM patients")
    assert run.take() == ".explain is not available yet: this connection has no explain()\n"


def test_explain_and_attest_use_the_extensions() -> None:
    class Extended(AdapterConnection):
        def explain(self, sql: str) -> str:
            return f"enclave: comparison in [{sql}]"

        def attestation_summary(self) -> dict[str, object]:
            return {"measurement": "ab12", "svn": 3, "expires": "2030-01-01T00:00:00Z"}

    runner = Run(Extended(":memory:"))
    assert runner(".explain SELECT 1;", ".attest")
    assert runner.take() == (
        "enclave: comparison in [SELECT 1]\n"
        "measurement  ab12\n"
        "svn          3\n"
        "expires      2030-01-01T00:00:00Z\n"
    )


def test_attest_without_an_enclave(run: Run) -> None:
    assert run(".attest")
    assert run.take() == "no attested enclave on this connection\n"


def test_timer(run: Run) -> None:
    assert run(".timer on", "SELECT 1 AS x;", ".timer off", "SELECT 2 AS y;")
    lines = run.take().splitlines()
    assert sum(line.startswith("Run Time: ") and line.endswith(" s") for line in lines) == 1
    assert not run(".timer maybe")
    assert "expected on or off" in run.err.getvalue()


def test_mode_switches_and_reports(run: Run) -> None:
    assert run(".mode csv", "SELECT id, name FROM patients ORDER BY id;", ".mode")
    assert run.take() == "id,name\n1,Ann\n2,Bob\ncurrent output mode: csv\n"
    assert not run(".mode xml")
    assert "unknown mode 'xml'" in run.err.getvalue()


def test_read_runs_a_file(run: Run, tmp_path: Path) -> None:
    script = tmp_path / "s.sql"
    script.write_text(".mode csv\nSELECT name\nFROM patients\nWHERE id = 2;\n", encoding="utf-8")
    assert run(f".read {script}")
    assert run.take() == "name\nBob\n"
    assert not run(f".read {tmp_path / 'missing.sql'}")
    assert "cannot read" in run.err.getvalue()


def test_read_fails_when_its_script_fails(run: Run, tmp_path: Path) -> None:
    script = tmp_path / "bad.sql"
    script.write_text("SELECT * FROM nowhere;\n", encoding="utf-8")
    assert not run(f".read {script}", "SELECT 1;")
    assert run.err.getvalue().count("Error (") == 1
    assert run.take() == ""  # bail: the statement after .read never ran


def test_output_goes_to_a_file_and_back(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    assert run(".mode csv", f".output {target}", "SELECT 1 AS a;", ".output", "SELECT 2 AS b;")
    assert target.read_text(encoding="utf-8") == "a\n1\n"
    assert run.take() == "b\n2\n"


def test_import_csv_inserts_through_sql(run: Run, tmp_path: Path) -> None:
    data = tmp_path / "more.csv"
    data.write_text("name,id\nCid,3\nDee,4\n", encoding="utf-8")
    assert run(f".import {data} patients", ".mode csv", "SELECT id, name FROM patients;")
    assert run.take() == "imported 2 rows into patients\nid,name\n1,Ann\n2,Bob\n3,Cid\n4,Dee\n"


def test_import_uses_bulk_insert_when_the_connection_has_it(tmp_path: Path) -> None:
    calls: list[tuple[str, list[dict[str, object]], object]] = []

    class Bulk(AdapterConnection):
        def bulk_insert(self, table: str, data: pa.Table, *, progress: bool = False) -> int:
            calls.append((table, data.to_pylist(), progress))
            return data.num_rows

    path = tmp_path / "rows.parquet"
    parquet.write_table(pa.table({"id": [7, 8]}), path)
    runner = Run(Bulk(":memory:"))
    assert runner(f".import {path} things")
    assert calls == [("things", [{"id": 7}, {"id": 8}], False)]
    assert runner.take() == "imported 2 rows into things\n"


def test_quit_stops_a_script(run: Run) -> None:
    assert run("SELECT 1 AS a;", ".quit", "SELECT 2 AS b;")
    assert "│ b │" not in run.take()
    assert run.shell.quit_requested


def test_errors_are_one_line_and_bail_stops(run: Run) -> None:
    assert not run("SELECT 1 AS a;", "SELECT FROM WHERE;", "SELECT 3 AS c;")
    assert run.err.getvalue() == (
        "Error (ProgrammingError): syntax error at line 1, column 13: "
        "Expected table name but got 'WHERE'\n"
    )
    assert "│ c │" not in run.take()


def test_bail_off_runs_on_and_still_fails() -> None:
    runner = Run(bail=False, mode="csv")
    assert not runner("SELECT * FROM nowhere;", "SELECT 3 AS c;")
    assert runner.err.getvalue().startswith("Error (")
    assert runner.take() == "c\n3\n"


def test_debug_adds_the_traceback() -> None:
    runner = Run(debug=True)
    assert not runner("SELECT * FROM nowhere;")
    assert "Traceback (most recent call last)" in runner.err.getvalue()


def test_table_mode_shows_max_rows_and_counts_the_rest() -> None:
    runner = Run(max_rows=3)
    assert runner("SELECT range AS n FROM range(5000);")
    text = runner.take()
    assert "│ 2 │" in text and "│ 3 │" not in text
    assert text.endswith("… 4997 more rows\n5000 rows\n")


def test_statements_without_results_report_a_count(run: Run) -> None:
    assert run("UPDATE patients SET name = 'Al' WHERE id = 1;", "CREATE TABLE x (a INTEGER);")
    assert run.take() == "1 row affected\nOK\n"


def test_a_final_statement_without_semicolon_runs() -> None:
    runner = Run(mode="csv")
    assert runner("SELECT 1 AS a")
    assert runner.take() == "a\n1\n"

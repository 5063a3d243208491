"""`make demo`: creates keys, a database and the clinic data, then runs every example script in
order, printing each statement, its result and where it ran.

It drives the public surface only (`engine.connect`, the key tool, the REPL's shell); it never
reaches into the host or the client, and it never prints key material.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import engine
from engine.client.key_tool import main as key_tool
from engine.repl.shell import Shell, error_line
from engine.repl.statements import split_statements

EXAMPLES = Path(__file__).resolve().parent
EXPECT_ERROR = re.compile(r"^--\s*expect-error:\s*(\w+)\s*$", re.MULTILINE)
CMK_FILE = "clinic_cmk.pem"
NEXT_CMK_FILE = "clinic_cmk_2027.pem"  # the master key that 10_rotation.sql rotates to
RULE = "─" * 78


def example_scripts() -> list[Path]:
    """The numbered example scripts, in the order the demo runs them."""
    return sorted(path for path in EXAMPLES.glob("[0-9][0-9]_*") if path.suffix in (".sql", ".py"))


def _title(path: Path) -> str:
    return path.stem[3:].replace("_", " ")


def _say(text: str) -> None:
    print(text, flush=True)


def _where(connection: Any, statement: str) -> str | None:
    explain = getattr(connection, "explain", None)
    if explain is None:
        return None
    try:
        report = explain(statement)
    except engine.Error:
        return None
    if isinstance(report, str):
        places = [
            line.split("runs in", 1)[1].strip() for line in report.splitlines() if "runs in" in line
        ]
    else:
        places = sorted({str(getattr(step, "where", step)) for step in report})
    return ", ".join(places) if places else None


def _split_comment(statement: str) -> tuple[list[str], str]:
    """The leading `--` comment lines of a statement (its prose) and the SQL after them."""
    lines = statement.splitlines()
    prose = []
    while lines and (lines[0].lstrip().startswith("--") or not lines[0].strip()):
        line = lines.pop(0).strip()
        if line and not EXPECT_ERROR.match(line):
            prose.append(line)
    return prose, "\n".join(lines).strip()


def run_sql_script(connection: Any, shell: Shell, path: Path) -> None:
    """Runs each statement of one .sql example; a statement marked `-- expect-error: Class` must
    fail with that PEP 249 class, any other failure stops the demo."""
    for statement in split_statements(path.read_text(encoding="utf-8")).statements:
        expected = EXPECT_ERROR.search(statement)
        prose, body = _split_comment(statement)
        if prose:
            _say("\n" + "\n".join(prose))
        _say("\nsql> " + body.replace("\n", "\n...> ") + ";")
        if expected:
            try:
                shell.execute(body)
            except engine.Error as error:
                if type(error).__name__ != expected.group(1):
                    raise
                _say(f"refused as expected: {error_line(error)}")
                continue
            raise SystemExit(f"{path.name}: expected {expected.group(1)}, but the statement ran")
        shell.execute(body)
        where = _where(connection, body)
        if where:
            _say(f"(ran in: {where})")


def run_python_script(connection: Any, path: Path) -> None:
    module = importlib.import_module(f"sql_examples.{path.stem}")
    module.run(connection, lambda text: _say("\npy> " + text))


def show_what_the_host_sees(database: Path) -> None:
    """The same rows through a connection without column encryption: ciphertext, as the host and
    a DBA without keys see them."""
    _say(f"\n{RULE}\nWhat the host sees (column_encryption=False, like SSMS without keys)\n{RULE}")
    with engine.connect(database, column_encryption=False) as connection:
        shell = Shell(connection, mode="table", max_rows=3, out=sys.stdout, err=sys.stdout)
        statement = "SELECT patient_id, name, ssn, salary FROM patients ORDER BY patient_id LIMIT 3"
        _say("\nsql> " + statement + ";")
        shell.execute(statement)


def start_attestation_service(workspace: Path) -> tuple[str, subprocess.Popen[str]]:
    """Writes a policy that allows exactly this build's enclave and starts the attestation
    service on loopback as its own process; returns its URL and the process."""
    from enclave.binding import enclave_info

    info = enclave_info()
    policy = {"allowed_measurements": [info.measurement.hex()], "min_svn": info.svn}
    policy_path = workspace / "policy.json"
    policy_path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    _say("\n$ enclavesql enclave-info --json")
    _say(json.dumps({"measurement": info.measurement.hex(), "svn": info.svn, "debug": info.debug}))
    _say(f"$ enclavesql attestation-service --policy {_shown(policy_path)} --port 0 &")
    log = (workspace / "attestation-service.log").open("w", encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "attestation-service",
            "--policy",
            str(policy_path),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url:
        process.kill()
        raise SystemExit(f"the attestation service did not start; see {log.name}")
    _say(f"listening on {url}")
    return url, process


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies below it, for printed commands."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _show_attestation(connection: Any) -> None:
    summary = getattr(connection, "attestation_summary", None)
    if summary is None:
        return
    facts = summary()
    if facts is None:
        return
    _say(
        f"attested enclave: measurement {getattr(facts, 'measurement', '?')}, "
        f"svn {getattr(facts, 'svn', '?')}, token expires {getattr(facts, 'expires_at', '?')}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sql_examples", description=__doc__)
    parser.add_argument("--workspace", default="demo", help="folder for keys and the database")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    workspace = Path(args.workspace).resolve()
    shutil.rmtree(workspace, ignore_errors=True)
    keys = workspace / "keys"
    keys.mkdir(parents=True)
    database = workspace / "demo.duckdb"

    title = "EnclaveSQL demo: a clinic database whose host never sees the sensitive columns"
    _say(f"{RULE}\n{title}\n{RULE}")
    _say(
        f"\n$ enclavesql keys create-cmk --name clinic_cmk --provider PEM_FILE "
        f"--key-path {CMK_FILE} --key-dir {keys} --enclave-computations"
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = key_tool(
            [
                "create-cmk",
                "--name",
                "clinic_cmk",
                "--provider",
                "PEM_FILE",
                "--key-path",
                CMK_FILE,
                "--key-dir",
                str(keys),
                "--enclave-computations",
            ]
        )
    # The key tool prints the CREATE statement; its signature is long, so show its start only.
    _say(re.sub(r"(SIGNATURE = 0x[0-9A-F]{16})[0-9A-F]+", r"\1…", printed.getvalue()).rstrip())
    with contextlib.redirect_stdout(io.StringIO()):
        key_tool(
            [
                "create-cmk",
                "--name",
                "clinic_cmk_2027",
                "--provider",
                "PEM_FILE",
                "--key-path",
                NEXT_CMK_FILE,
                "--key-dir",
                str(keys),
            ]
        )
    _say(f"(and {NEXT_CMK_FILE}, the master key the rotation example moves to)")
    if status != 0:
        return status

    url, service = start_attestation_service(workspace)
    try:
        with engine.connect(
            database, key_dir=keys, attestation_protocol="service", attestation_url=url
        ) as connection:
            shell = Shell(connection, mode="table", max_rows=10, out=sys.stdout, err=sys.stdout)
            for path in example_scripts():
                _say(f"\n{RULE}\n{path.name}: {_title(path)}\n{RULE}")
                if path.suffix == ".sql":
                    run_sql_script(connection, shell, path)
                else:
                    run_python_script(connection, path)
            _show_attestation(connection)
            connection.commit()
    finally:
        service.terminate()
        service.wait(timeout=10)
    show_what_the_host_sees(database)

    elapsed = time.perf_counter() - started
    _say(f"\n{RULE}\nDone in {elapsed:.1f} s. Open the REPL on the demo database:")
    _say(f"    .venv/bin/enclavesql {_shown(database)} --key-dir {_shown(keys)}")
    _say("  add --attestation-protocol none for enclave queries without a service (development),")
    _say(
        f"  or start the service again: .venv/bin/enclavesql attestation-service --policy "
        f"{_shown(workspace / 'policy.json')} --port 4545"
    )
    _say("  and pass --attestation-protocol service --attestation-url http://127.0.0.1:4545")
    _say(RULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

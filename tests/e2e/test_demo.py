"""`make demo` runs every sql_examples script on a fresh workspace; this runs the same steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sql_examples.__main__ import example_scripts

ROOT = Path(__file__).resolve().parents[2]


def test_every_example_runs_and_the_host_view_is_ciphertext(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sql_examples", "--workspace", str(tmp_path / "demo")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    output = completed.stdout
    for script in example_scripts():
        assert f"{script.name}:" in output
    # The point lookup found the inserted row by its encrypted ssn and decrypted it.
    assert "Ada Lovelace" in output and "1815-12-10" in output
    # The connection attested the enclave through the service the demo started on loopback, and
    # the enclave examples (range, LIKE, ORDER BY, aggregates, rotation) produced results.
    assert "listening on http://127.0.0.1:" in output
    assert "attested enclave: measurement" in output
    assert "high_earners" in output and "average_salary" in output
    # Refusals are reported, with the PEP 249 class that the script expects.
    assert output.count("refused as expected") == 2
    # Without column encryption the sensitive columns come back as ciphertext.
    host_view = output.split("What the host sees", 1)[1]
    assert "0x01" in host_view and "123-45-6789" not in host_view
    assert (tmp_path / "demo" / "demo.duckdb").is_file()

"""The notebook magic end to end: nbclient runs a notebook in a real ipykernel of this venv that
loads `engine.jupyter`, creates keys and an encrypted table, queries it with `{name}` parameters,
and hands the same DB-API connection to JupySQL and pandas.read_sql.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import engine

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("sql", reason="jupysql is not installed")

pytestmark = pytest.mark.skipif(
    not hasattr(engine, "connect"), reason="engine.connect is not written yet"
)

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "enclavesql-test"
LOCK = "\N{LOCK}"


def _kernel_spec(directory: Path) -> None:
    """A kernel spec that runs this interpreter, with JupySQL's telemetry switched off."""
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "EnclaveSQL tests",
                "language": "python",
                "env": {
                    "PLOOMBER_STATS_ENABLED": "false",
                    "PLOOMBER_VERSION_CHECK_DISABLED": "true",
                    "PYTHONPATH": str(ROOT),
                },
            }
        ),
        encoding="utf-8",
    )


def _key_file(directory: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "cmk1.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


ENCRYPTED = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = CEK1, ENCRYPTION_TYPE = DETERMINISTIC, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)


def _cells(database: Path, keys: Path) -> list[str]:
    return [
        "%load_ext engine.jupyter",
        f"%esql {database} --key-dir {keys} --max-rows 2",
        "%%esql\n"
        "CREATE COLUMN MASTER KEY CMK1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk1.pem');\n"
        "CREATE COLUMN ENCRYPTION KEY CEK1 WITH VALUES (COLUMN_MASTER_KEY = CMK1, "
        "ALGORITHM = 'RSA_OAEP');\n"
        f"CREATE TABLE patients (id INTEGER, ssn CHAR(11) {ENCRYPTED}, name VARCHAR);\n"
        "INSERT INTO patients VALUES (1, '123-45-6789', 'Ann'), (2, '987-65-4321', 'Bob'),\n"
        "  (3, NULL, 'Cid');",
        # 2: a line magic with two parameters; the frame's rich view is the cell's result.
        'wanted = "987-65-4321"\n'
        "min_id = 1\n"
        "frame = %esql SELECT id, ssn, name FROM patients WHERE ssn = {wanted} AND id >= {min_id}\n"
        "frame",
        "import pandas as pd\nprint(isinstance(frame, pd.DataFrame), frame.to_dict('records'))",
        # 4: a cell magic; braces inside a string stay text.
        "%%esql\nSELECT name, '{min_id}' AS text FROM patients WHERE id = {min_id}",
        # 5: every row, to see truncation in the HTML view.
        "%esql SELECT id, ssn FROM patients ORDER BY id",
        # 6: an unknown name is a ProgrammingError, not text in the SQL.
        "try:\n"
        "    get_ipython().run_line_magic('esql', 'SELECT {nowhere}')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)",
        # 7: JupySQL with a DB-API connection to the same file.
        "import engine\n"
        f"con = engine.connect({str(database)!r}, key_dir={str(keys)!r})\n"
        "%load_ext sql\n"
        "%sql con\n"
        "result = %sql SELECT ssn, name FROM patients WHERE id = 2\n"
        "print(result.DataFrame().to_dict('records'))",
        # 8: pandas.read_sql with a parameter compared with the encrypted column.
        "import warnings\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore', UserWarning)\n"
        "    read = pd.read_sql('SELECT id, name FROM patients WHERE ssn = ?', con,\n"
        "                       params=['123-45-6789'])\n"
        "print(read.to_dict('records'))",
    ]


def _text(cell: Any) -> str:
    return "".join(
        output.get("text", "") for output in cell.outputs if output.output_type == "stream"
    )


def _html(cell: Any) -> str:
    for output in cell.outputs:
        if output.output_type == "execute_result":
            return str(output.data.get("text/html", ""))
    return ""


@pytest.fixture
def executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    _kernel_spec(tmp_path / "jupyter")
    keys = tmp_path / "keys"
    keys.mkdir()
    _key_file(keys)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(source) for source in _cells(tmp_path / "nb.duckdb", keys)
    ]
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return list(notebook.cells)


def test_notebook(executed: list[Any]) -> None:
    errors = [o for cell in executed for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    html = _html(executed[3])
    assert f'<th>ssn <span title="encrypted column">{LOCK}</span></th>' in html
    assert "<th>id</th>" in html and "<th>name</th>" in html  # plaintext columns: no lock
    assert "<td>987-65-4321</td><td>Bob</td>" in html
    assert "123-45-6789" not in html
    assert _text(executed[4]) == ("True [{'id': 2, 'ssn': '987-65-4321', 'name': 'Bob'}]\n")
    cell_result = next(o for o in executed[5].outputs if o.output_type == "execute_result")
    assert "Ann" in cell_result.data["text/plain"]
    assert "{min_id}" in cell_result.data["text/plain"]
    all_rows = _html(executed[6])
    assert "3 rows" in all_rows and "1 more rows not shown" in all_rows
    assert "<td>NULL</td>" not in all_rows  # the NULL ssn is in the row left out
    assert _text(executed[7]) == "ProgrammingError\n"
    assert "[{'ssn': '987-65-4321', 'name': 'Bob'}]" in _text(executed[8])
    assert _text(executed[9]) == "[{'id': 1, 'name': 'Ann'}]\n"

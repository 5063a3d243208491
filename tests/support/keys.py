"""Test keys: a PEM_FILE column master key written to a folder as cmk.pem, and the DDL that
registers it: as a plain CMK (cmk1, with CEK cek1), or as an enclave-enabled one (cmk1 and cek1,
or cmk_e and cek_e). It must NOT open connections or create tables: tests run the DDL themselves."""

from __future__ import annotations

from pathlib import Path

from engine.client.keystores import build_registry

__all__ = [
    "CEK1_CEK2_KEYS",
    "CEK1_ENCLAVE_KEYS",
    "CEK1_KEYS",
    "ENCLAVE_KEYS",
    "make_cmk",
    "make_pem_keys",
]

# cmk1 over the folder's cmk.pem (no enclave computations), and cek1 under it.
CEK1_KEYS = (
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'cmk.pem')",
    "CREATE COLUMN ENCRYPTION KEY cek1 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP')",
)
# cmk1 and two CEKs under it, cek1 and cek2: for tests that move columns between keys.
CEK1_CEK2_KEYS = (
    *CEK1_KEYS,
    "CREATE COLUMN ENCRYPTION KEY cek2 WITH VALUES (COLUMN_MASTER_KEY = cmk1, "
    "ALGORITHM = 'RSA_OAEP')",
)
# The same names, cmk1 enclave-enabled: for tests whose cek1 columns run in the enclave.
CEK1_ENCLAVE_KEYS = (
    "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)",
    CEK1_KEYS[1],
)
# cmk_e over the same cmk.pem, enclave-enabled, and cek_e under it.
ENCLAVE_KEYS = (
    "CREATE COLUMN MASTER KEY cmk_e WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
    "KEY_PATH = 'cmk.pem', ENCLAVE_COMPUTATIONS)",
    "CREATE COLUMN ENCRYPTION KEY cek_e WITH VALUES (COLUMN_MASTER_KEY = cmk_e, "
    "ALGORITHM = 'RSA_OAEP')",
)


def make_cmk(directory: Path) -> Path:
    """Write a fresh 2048-bit RSA key to ``directory``/cmk.pem (the CMK file of every key DDL
    here) and return ``directory``, ready to pass as ``key_dir``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     (make_cmk(Path(folder)) / "cmk.pem").is_file()
    True
    """
    return make_pem_keys(directory, "cmk.pem")


def make_pem_keys(directory: Path, *names: str) -> Path:
    """Write a fresh 2048-bit RSA key to ``directory``/name for each name; return ``directory``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     sorted(p.name for p in make_pem_keys(Path(folder), "a.pem", "b.pem").iterdir())
    ['a.pem', 'b.pem']
    """
    provider = build_registry(key_directory=directory).get("PEM_FILE")
    for name in names:
        provider.generate_key(name, key_size=2048)
    return directory

"""Builds enclave/enclavesql_udfs.duckdb_extension: enclave predicates as native DuckDB functions.

It compiles native/duckdb_extension/enclavesql_udfs.c against the C API headers of the DuckDB
release installed in this environment (taken from that release's source archive on PyPI, cached
under native/build/) and appends the metadata footer DuckDB reads before loading a file. It must
not change anything else: the enclave library itself is built by enclave/build_enclave.py.

Run it with ``python -m enclave.build_duckdb_extension`` (the Makefile does, after installing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

__all__ = ["build", "footer"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "native" / "duckdb_extension" / "enclavesql_udfs.c"
STAGE_SOURCE = SOURCE.with_name("enclavesql_stage.inc")  # included by SOURCE
OUTPUT = Path(__file__).resolve().parent / "enclavesql_udfs.duckdb_extension"
HEADERS = ("duckdb.h", "duckdb_extension.h")
# The C API version the source is written against (duckdb_extension.h's default v1 surface).
C_API_VERSION = "v1.5.6"
EXTENSION_VERSION = "enclavesql-1"
_INDEX = "https://pypi.org/simple/duckdb/"


def footer(platform: str, c_api_version: str = C_API_VERSION) -> bytes:
    """DuckDB's 512-byte extension footer: eight 32-byte fields, last field first, then an
    empty 256-byte signature (the file is unsigned, so DuckDB must allow unsigned extensions).

    >>> tail = footer("linux_amd64")
    >>> len(tail), tail[224:225], tail[192:203], tail[96:104]
    (512, b'4', b'linux_amd64', b'C_STRUCT')
    """
    fields = [b"4", platform.encode(), c_api_version.encode(), EXTENSION_VERSION.encode()]
    fields += [b"C_STRUCT", b"", b"", b""]
    if any(len(field) > 32 for field in fields):
        raise ValueError("an extension metadata field is longer than 32 bytes")
    return b"".join(field.ljust(32, b"\0") for field in reversed(fields)) + bytes(256)


def _sdist_url(version: str) -> tuple[str, str]:
    request = urllib.request.Request(
        _INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        index = json.load(response)
    name = f"duckdb-{version}.tar.gz"
    for entry in index.get("files", []):
        if entry.get("filename") == name:
            return entry["url"], entry["hashes"]["sha256"]
    raise SystemExit(f"PyPI lists no source archive {name}; cannot fetch DuckDB's C API headers")


def _headers(version: str) -> Path:
    """The folder with DuckDB's C API headers for ``version``, downloaded once."""
    folder = ROOT / "native" / "build" / f"duckdb-{version}-headers"
    if all((folder / name).is_file() for name in HEADERS):
        return folder
    url, digest = _sdist_url(version)
    print(f"fetching DuckDB {version}'s C API headers from PyPI (source archive, once)")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "duckdb.tar.gz"
        with urllib.request.urlopen(url, timeout=300) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
        if hashlib.sha256(archive.read_bytes()).hexdigest() != digest:
            raise SystemExit("DuckDB's source archive does not match PyPI's sha256; not using it")
        staged = Path(scratch) / "headers"
        staged.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if base in HEADERS and member.name.endswith(f"src/include/{base}"):
                    source = tar.extractfile(member)
                    if source is not None:
                        (staged / base).write_bytes(source.read())
        if not all((staged / name).is_file() for name in HEADERS):
            raise SystemExit("DuckDB's source archive has no src/include/duckdb_extension.h")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(staged, folder)
    return folder


def _platform() -> str:
    import duckdb

    row = duckdb.connect().execute("PRAGMA platform").fetchone()
    assert row is not None
    return str(row[0])


def build(output: Path = OUTPUT, *, force: bool = False) -> Path:
    """Compile and stamp the extension; a no-op when ``output`` is newer than its inputs."""
    version = importlib.metadata.version("duckdb")
    stamp = output.with_suffix(".version")
    inputs = [SOURCE, STAGE_SOURCE, ROOT / "native" / "include" / "enclave.h", Path(__file__)]
    fresh = (
        output.is_file()
        and stamp.is_file()
        and stamp.read_text() == version
        and all(output.stat().st_mtime >= path.stat().st_mtime for path in inputs)
    )
    if fresh and not force:
        return output
    headers = _headers(version)
    compiler = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as scratch:
        library = Path(scratch) / "enclavesql_udfs.so"
        command = [
            compiler, "-std=c11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
            "-Wall", "-Wextra", "-Werror", f"-I{headers}", f"-I{ROOT / 'native' / 'include'}",
            str(SOURCE), "-o", str(library), "-lpthread",
        ]  # fmt: skip
        subprocess.run(command, check=True)
        staged = output.with_name(output.name + ".tmp")
        staged.write_bytes(library.read_bytes() + footer(_platform()))
        os.replace(staged, output)
    stamp.write_text(version)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    path = build(force=args.force)
    print(f"built {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

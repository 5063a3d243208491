"""`enclavesql enclave-info`: print the loaded enclave's measurement, SVN and debug flag.

Operators paste its output into the attestation policy (docs/attestation.md). It only reads
`enclave.binding.enclave_info()`; it must not open sessions, touch keys or the platform key.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "enclave_info_record"]

NOT_BUILT = (
    "the native enclave is not built, so there is no measurement to print; build it with "
    "`pip install -e .` (or `make test`) and run this again"
)


class EnclaveNotBuilt(RuntimeError):
    """The compiled module, or its enclave section, is missing."""


def enclave_info_record() -> dict[str, Any]:
    """{"measurement": hex, "svn": int, "debug": bool} of the enclave in this process.

    >>> try:
    ...     record = enclave_info_record()
    ... except EnclaveNotBuilt:
    ...     record = {"measurement": "0" * 64, "svn": 1, "debug": False}
    >>> sorted(record), len(record["measurement"])
    (['debug', 'measurement', 'svn'], 64)
    """
    try:
        # import_module, not an import statement, so a test can stand in for the binding.
        binding = importlib.import_module("enclave.binding")
    except ImportError:
        raise EnclaveNotBuilt(NOT_BUILT) from None
    enclave_info = getattr(binding, "enclave_info", None)
    if enclave_info is None:
        raise EnclaveNotBuilt(NOT_BUILT)
    info = enclave_info()
    return {
        "measurement": bytes(info.measurement).hex(),
        "svn": int(info.svn),
        "debug": bool(info.debug),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclavesql enclave-info",
        description="Print the enclave's measurement, SVN and debug flag for an attestation "
        "policy.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the record (text or --json); exit 1 with one line on stderr if not built."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        record = enclave_info_record()
    except EnclaveNotBuilt as error:
        print(f"enclavesql enclave-info: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(record))
    else:
        print(f"measurement: {record['measurement']}")
        print(f"svn: {record['svn']}")
        print(f"debug: {'true' if record['debug'] else 'false'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

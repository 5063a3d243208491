"""Command-line options of `enclavesql` and the `%esql` magic, and opening a connection from them.

It turns options into `engine.connect` keyword arguments; it must not read keys, talk to the
attestation service itself or open DuckDB directly.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from engine.errors import InterfaceError
from engine.repl.formatting import MODES

__all__ = ["DEFAULT_MAX_ROWS", "build_parser", "parse_options", "connect_kwargs", "open_connection"]

DEFAULT_MAX_ROWS = 40


def _version() -> str:
    try:
        return version("enclavesql")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def build_parser(prog: str = "enclavesql") -> argparse.ArgumentParser:
    """The option parser shared by the shell and the notebook magic.

    >>> build_parser().parse_args(["shop.db", "--mode", "csv"]).mode
    'csv'
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="EnclaveSQL interactive shell: SQL over Always Encrypted columns.",
    )
    parser.add_argument(
        "database", nargs="?", default=":memory:", help="database file (default: in memory)"
    )
    parser.add_argument(
        "-c", "--command", metavar="SQL", help="run SQL (or a dot command), then exit"
    )
    parser.add_argument(
        "--no-decrypt",
        action="store_true",
        help="connect without column encryption and show encrypted cells as 0x… ciphertext",
    )
    parser.add_argument("--attestation-url", metavar="URL", help="attestation service URL")
    parser.add_argument(
        "--attestation-protocol",
        choices=("none", "service"),
        help="how the enclave is attested (none is for development only)",
    )
    parser.add_argument("--key-dir", metavar="DIR", help="directory of PEM_FILE column master keys")
    parser.add_argument(
        "--trusted-key-path",
        metavar="PATH",
        action="append",
        dest="trusted_key_paths",
        help="accept only this CMK key path (repeatable)",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="table", help="output mode (default: table)"
    )
    parser.add_argument(
        "--max-rows",
        type=_positive,
        default=DEFAULT_MAX_ROWS,
        metavar="N",
        help=f"rows shown in table mode before '… N more rows' (default: {DEFAULT_MAX_ROWS})",
    )
    parser.add_argument("--history", metavar="FILE", help="history file of the interactive prompt")
    parser.add_argument(
        "--bail",
        choices=("on", "off"),
        default="on",
        help="stop a script at its first error (default: on)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--connect",
        metavar="MODULE:FUNCTION",
        help="open the connection with this function instead of engine.connect "
        "(it takes the same arguments)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def parse_options(argv: Sequence[str], prog: str = "enclavesql") -> argparse.Namespace:
    """Parse ``argv``; argparse exits with status 2 on a bad option, as every CLI does."""
    return build_parser(prog).parse_args(list(argv))


def connect_kwargs(options: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `engine.connect` that the options ask for.

    Options left unset are left out, so the engine's own defaults apply.

    >>> connect_kwargs(parse_options(["--no-decrypt", "--key-dir", "keys"]))
    {'column_encryption': False, 'key_dir': 'keys'}
    """
    kwargs: dict[str, Any] = {"column_encryption": not options.no_decrypt}
    for name in ("attestation_protocol", "attestation_url", "key_dir", "trusted_key_paths"):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def _connect_function(spec: str | None) -> Callable[..., Any]:
    if spec is None:
        import engine

        function = getattr(engine, "connect", None)
        if function is None:
            raise InterfaceError(
                "engine.connect is not available in this build; "
                "pass --connect MODULE:FUNCTION to use another DB-API connect function"
            )
        return function  # type: ignore[no-any-return]
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InterfaceError(f"--connect expects MODULE:FUNCTION, got {spec!r}")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InterfaceError(
            f"cannot load the connect function {spec!r} ({type(error).__name__}); "
            "check the module path and function name"
        ) from None
    return function  # type: ignore[no-any-return]


def open_connection(options: argparse.Namespace) -> Any:
    """A DB-API connection to ``options.database`` opened as the options say."""
    return _connect_function(options.connect)(options.database, **connect_kwargs(options))

"""`enclavesql keys`: create column master keys and column encryption keys, print their T-SQL.

It creates CMKs (a PEM file, or a key pair generated on a PKCS#11 token), wraps fresh CEKs and
rewraps CEKs for rotation, printing CREATE/ALTER statements on stdout and notes on stderr; on a
database it rotates CMKs and CEKs (engine.rotation). It must never print key bytes or a PIN,
and it reports failures as one line naming the PEP 249 class.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from collections.abc import Sequence

from engine.client.cek_envelope import rewrap_envelope
from engine.client.cmk_metadata import metadata_digest
from engine.client.keystores.base import KeyStoreProvider
from engine.client.keystores.pem_file import PemFileProvider
from engine.client.keystores.pkcs11_token import Pkcs11Provider
from engine.client.keystores.pkcs11_uri import parse_pkcs11_uri
from engine.client.keystores.registry import build_registry
from engine.errors import Error, ProgrammingError

__all__ = ["main", "quote_identifier", "quote_string"]

CEK_LENGTH = 32  # AEAD_AES_256_CBC_HMAC_SHA_256 root keys are 256 bits.
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_identifier(name: str) -> str:
    """A T-SQL identifier: plain names as they are, others in brackets.

    >>> quote_identifier("CMK1"), quote_identifier("my key"), quote_identifier("a]b")
    ('CMK1', '[my key]', '[a]]b]')
    """
    if _PLAIN_IDENTIFIER.match(name):
        return name
    return "[" + name.replace("]", "]]") + "]"


def quote_string(text: str) -> str:
    """A T-SQL string literal.

    >>> quote_string("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclavesql keys",
        description="Create column master keys (CMKs) and column encryption keys (CEKs).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmk = commands.add_parser("create-cmk", help="create a CMK and print CREATE COLUMN MASTER KEY")
    cmk.add_argument("--name", required=True, help="the CMK's name in SQL")
    cmk.add_argument("--provider", required=True, help="PEM_FILE or PKCS11")
    cmk.add_argument("--key-path", required=True, help="a PEM file path or a pkcs11: URI")
    cmk.add_argument(
        "--enclave-computations",
        action="store_true",
        help="allow enclave computations and print the metadata SIGNATURE",
    )
    cmk.add_argument("--key-dir", help="directory that relative PEM key paths resolve against")
    cmk.add_argument("--key-size", type=int, default=3072, help="RSA modulus bits (default 3072)")
    cmk.add_argument("--force", action="store_true", help="replace an existing key")
    cmk.add_argument(
        "--encrypt",
        action="store_true",
        help="PEM_FILE: encrypt the key file with $ENCLAVESQL_PEM_PASSWORD",
    )

    cek = commands.add_parser(
        "create-cek", help="wrap a fresh CEK and print CREATE COLUMN ENCRYPTION KEY"
    )
    cek.add_argument("--name", required=True, help="the CEK's name in SQL")
    cek.add_argument("--cmk-name", required=True, help="the CMK that wraps it")
    cek.add_argument("--provider", required=True, help="the CMK's KEY_STORE_PROVIDER_NAME")
    cek.add_argument("--key-path", required=True, help="the CMK's KEY_PATH")
    cek.add_argument("--key-dir", help="directory that relative PEM key paths resolve against")

    rewrap = commands.add_parser(
        "rewrap", help="wrap an existing CEK under a new CMK and print ALTER ... ADD VALUE"
    )
    rewrap.add_argument("--name", required=True, help="the CEK's name in SQL")
    rewrap.add_argument("--encrypted-value", required=True, help="the current value, 0x...")
    rewrap.add_argument("--old-provider", required=True)
    rewrap.add_argument("--old-key-path", required=True)
    rewrap.add_argument("--new-cmk-name", required=True)
    rewrap.add_argument("--new-provider", required=True)
    rewrap.add_argument("--new-key-path", required=True)
    rewrap.add_argument("--key-dir", help="directory that relative PEM key paths resolve against")

    rotate_cmk = commands.add_parser(
        "rotate-cmk",
        help="on a database: move CEKs to a new CMK (ADD VALUE, check, DROP VALUE), atomically",
    )
    rotate_cmk.add_argument("--database", required=True, help="the EnclaveSQL database file")
    which = rotate_cmk.add_mutually_exclusive_group(required=True)
    which.add_argument("--cek", action="append", help="a CEK to rotate (repeatable)")
    which.add_argument("--from-cmk", help="rotate every CEK that this CMK wraps")
    rotate_cmk.add_argument("--to-cmk", required=True, help="the new CMK (already created)")
    rotate_cmk.add_argument(
        "--keep-old",
        action="store_true",
        help="stop after ADD VALUE, so that clients can move over before the old value goes",
    )
    rotate_cmk.add_argument("--key-dir", help="directory that relative PEM keys resolve against")

    rotate_cek = commands.add_parser(
        "rotate-cek", help="on a database: re-encrypt one column under another CEK, atomically"
    )
    rotate_cek.add_argument("--database", required=True, help="the EnclaveSQL database file")
    rotate_cek.add_argument("--table", required=True)
    rotate_cek.add_argument("--column", required=True)
    rotate_cek.add_argument("--to", required=True, dest="to_cek", help="the new CEK")
    rotate_cek.add_argument(
        "--encryption-type",
        choices=["DETERMINISTIC", "RANDOMIZED"],
        type=str.upper,
        help="the new encryption type (default: keep the column's)",
    )
    rotate_cek.add_argument(
        "--path",
        choices=["auto", "client", "enclave"],
        default="auto",
        help="where re-encryption runs (default auto: the enclave when it can, else the client)",
    )
    rotate_cek.add_argument(
        "--attestation-protocol",
        choices=["none", "service"],
        help="open an enclave session for the enclave path ('none': unattested, development)",
    )
    rotate_cek.add_argument("--attestation-url", help="the attestation service (with 'service')")
    rotate_cek.add_argument("--progress", action="store_true", help="show a progress bar")
    rotate_cek.add_argument("--key-dir", help="directory that relative PEM keys resolve against")
    return parser


def _provider(name: str, key_dir: str | None, *key_paths: str) -> KeyStoreProvider:
    # Only the built-in stores exist outside a connection; the registry gives the usual error.
    # The key paths were typed by the user, not read from a database, so the PKCS#11 modules
    # they name may be loaded.
    modules = [
        module
        for key_path in key_paths
        if key_path[:7].lower() == "pkcs11:"
        for module in [parse_pkcs11_uri(key_path).module_path]
        if module
    ]
    return build_registry(key_directory=key_dir, pkcs11_allowed_modules=modules).get(name)


def _stored_key_path(provider: KeyStoreProvider, key_path: str) -> str:
    """The KEY_PATH to print: a pkcs11: URI loses its pin-value (see docs/keys.md)."""
    if isinstance(provider, Pkcs11Provider):
        uri = parse_pkcs11_uri(key_path)
        if uri.pin_value is not None:
            print(
                "-- note: pin-value was removed from KEY_PATH so that no PIN is stored in the "
                "catalog; give the PIN with pin-source=file:/path/to/pin in the URI or with "
                "ENCLAVESQL_PKCS11_PIN",
                file=sys.stderr,
            )
        return uri.without_pin_value()
    return key_path


def _create_cmk(args: argparse.Namespace) -> None:
    provider = _provider(args.provider, args.key_dir, args.key_path)
    if isinstance(provider, PemFileProvider):
        provider.generate_key(
            args.key_path, key_size=args.key_size, overwrite=args.force, encrypt=args.encrypt
        )
    elif isinstance(provider, Pkcs11Provider):
        if args.encrypt:
            raise ProgrammingError("--encrypt applies to PEM_FILE keys only")
        provider.generate_key(args.key_path, key_size=args.key_size, overwrite=args.force)
    else:  # pragma: no cover - build_registry only knows the built-ins
        raise ProgrammingError(f"provider '{args.provider}' cannot create keys")
    key_path = _stored_key_path(provider, args.key_path)
    options = [
        f"KEY_STORE_PROVIDER_NAME = {quote_string(provider.name)}",
        f"KEY_PATH = {quote_string(key_path)}",
    ]
    if args.enclave_computations:
        # The signature covers the KEY_PATH as printed (and stored), without a PIN, but the
        # token is reached through the path as given, which may carry the PIN.
        digest = metadata_digest(provider.name, key_path, True)
        signature = provider.sign_sha256_digest(args.key_path, digest)
        options.append(f"ENCLAVE_COMPUTATIONS (SIGNATURE = 0x{signature.hex().upper()})")
    print(f"CREATE COLUMN MASTER KEY {quote_identifier(args.name)}")
    print("WITH (\n    " + ",\n    ".join(options) + "\n);")


def _value_clause(cmk_name: str, envelope: bytes) -> str:
    return (
        f"    COLUMN_MASTER_KEY = {quote_identifier(cmk_name)},\n"
        "    ALGORITHM = 'RSA_OAEP',\n"
        f"    ENCRYPTED_VALUE = 0x{envelope.hex().upper()}"
    )


def _create_cek(args: argparse.Namespace) -> None:
    provider = _provider(args.provider, args.key_dir, args.key_path)
    cek = bytearray(secrets.token_bytes(CEK_LENGTH))
    try:
        envelope = provider.wrap_cek(args.key_path, bytes(cek))
    finally:
        cek[:] = bytes(CEK_LENGTH)
    print(f"CREATE COLUMN ENCRYPTION KEY {quote_identifier(args.name)}")
    print("WITH VALUES (\n" + _value_clause(args.cmk_name, envelope) + "\n);")


def _rewrap(args: argparse.Namespace) -> None:
    text = args.encrypted_value.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        envelope = bytes.fromhex(text)
    except ValueError:
        raise ProgrammingError(
            "--encrypted-value must be the hexadecimal ENCRYPTED_VALUE, as 0x..."
        ) from None
    old = _provider(args.old_provider, args.key_dir, args.old_key_path)
    new = _provider(args.new_provider, args.key_dir, args.new_key_path)
    rewrapped = rewrap_envelope(old, args.old_key_path, envelope, new, args.new_key_path)
    print(f"ALTER COLUMN ENCRYPTION KEY {quote_identifier(args.name)}")
    print("ADD VALUE (\n" + _value_clause(args.new_cmk_name, rewrapped) + "\n);")


def _rotate_cmk(args: argparse.Namespace) -> None:
    from engine.connection import connect
    from engine.rotation import rotate_cmk

    with connect(args.database, key_dir=args.key_dir) as con:
        names = args.cek or list(con._current_snapshot().ceks_using_cmk(args.from_cmk))
        if not names:
            raise ProgrammingError(
                f"column master key {args.from_cmk} wraps no column encryption key"
            )
        for name in names:
            for statement in rotate_cmk(con, name, args.to_cmk, drop_old=not args.keep_old):
                print(statement + ";")
    if args.keep_old:
        print(
            "-- note: both values are kept; finish with ALTER COLUMN ENCRYPTION KEY ... DROP "
            "VALUE once every client can reach the new column master key",
            file=sys.stderr,
        )


def _rotate_cek(args: argparse.Namespace) -> None:
    from engine.connection import connect
    from engine.rotation import rotate_cek

    with connect(
        args.database,
        key_dir=args.key_dir,
        attestation_protocol=args.attestation_protocol,
        attestation_url=args.attestation_url,
    ) as con:
        result = rotate_cek(
            con,
            args.table,
            args.column,
            args.to_cek,
            path=args.path,
            encryption_type=args.encryption_type,
            progress=True if args.progress else None,
        )
    print(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `enclavesql keys ARGS`; 0 on success, 1 on an error, 2 on a usage error."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_request:  # argparse's usage errors and --help
        return exit_request.code if isinstance(exit_request.code, int) else 2
    handlers = {
        "create-cmk": _create_cmk,
        "create-cek": _create_cek,
        "rewrap": _rewrap,
        "rotate-cmk": _rotate_cmk,
        "rotate-cek": _rotate_cek,
    }
    try:
        handlers[args.command](args)
    except Error as error:
        print(f"enclavesql keys: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0

"""Runs one fuzz target under atheris in this process: `python -m tests.fuzz._worker NAME ...`.

The runner (`python -m tests.fuzz`) starts it, one process per target, because atheris owns its
process and exits when the run ends. It must not be imported by tests: atheris.Fuzz never returns.
Usage: NAME [--seed-dir DIR] [--dict-file FILE] [--quick] -- LIBFUZZER_ARGUMENTS...
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import atheris

from tests.fuzz import target_named

# The exit status that tells the runner a target skipped itself (libFuzzer never uses 3).
SKIPPED_EXIT = 3
# Our own code; --quick instruments only these, since instrumenting sqlglot takes seconds.
OWN_PACKAGES = ("engine", "enclave", "tests")


def dictionary_line(entry: bytes) -> str:
    """One libFuzzer dictionary line: the entry in double quotes, quotes, backslashes and
    non-printables as \\xNN.

    >>> dictionary_line(b'SELECT "x"\\n')
    '"SELECT \\\\x22x\\\\x22\\\\x0a"'
    """
    text = "".join(
        chr(byte) if 32 <= byte < 127 and byte not in b'"\\' else f"\\x{byte:02x}" for byte in entry
    )
    return f'"{text}"'


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: python -m tests.fuzz._worker NAME [options] -- LIBFUZZER_ARGS")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz._worker")
    parser.add_argument("name")
    parser.add_argument("--seed-dir", type=Path)
    parser.add_argument("--dict-file", type=Path)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(argv[:split])
    libfuzzer_arguments = argv[split + 1 :]
    target = target_named(options.name)
    include = [
        name for name in target.instrument if not options.quick or name.startswith(OWN_PACKAGES)
    ]
    with atheris.instrument_imports(include=include):
        module = importlib.import_module(target.module)
    reason = getattr(module, "skip_reason", lambda: None)()
    if reason:
        print(f"fuzz target {target.name} skipped: {reason}", flush=True)
        raise SystemExit(SKIPPED_EXIT)
    if options.seed_dir:
        for number, seed in enumerate(module.seeds()):
            (options.seed_dir / f"seed-{number:04d}").write_bytes(seed)
    entries = getattr(module, "DICTIONARY", ())
    if options.dict_file and entries:
        options.dict_file.write_text("".join(dictionary_line(e) + "\n" for e in entries))
        libfuzzer_arguments.append(f"-dict={options.dict_file}")
    atheris.Setup([sys.argv[0], *libfuzzer_arguments], module.test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])

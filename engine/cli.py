"""The `enclavesql` console script: dispatches to the key tool, the attestation tools or the REPL.

It only parses the first word and hands over; each subcommand lives in its own module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "keys":
        from engine.client.key_tool import main as keys_main

        return keys_main(args[1:])
    if args and args[0] == "attestation-service":
        from enclave.attestation.service import main as service_main

        return service_main(args[1:])
    if args and args[0] == "enclave-info":
        from enclave.info_tool import main as info_main

        return info_main(args[1:])
    from engine.repl.app import main as repl_main

    return repl_main(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The engine's logging: the logger names and one function per event the engine reports.

Hook points call these functions with counts, kinds and object names only, so a record can
never carry SQL text, a literal, a parameter, a plaintext, a ciphertext or key bytes: nothing
here accepts them. It must not configure handlers or levels; the application does that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "ENCLAVE",
    "HOST",
    "KEYS",
    "ROOT",
    "catalog_changed",
    "describe_cache",
    "enclave_query",
    "key_unwrapped",
    "plaintext_ddl",
    "rotation",
]

ROOT = logging.getLogger("enclavesql")
HOST = logging.getLogger("enclavesql.host")
ENCLAVE = logging.getLogger("enclavesql.enclave")
KEYS = logging.getLogger("enclavesql.keys")


def describe_cache(layer: Literal["client", "host"], described: Any = None) -> None:
    """DEBUG: a describe cache lookup of the client (``enclavesql``) or the host
    (``enclavesql.host``): a hit without ``described``, a miss with the Plan that parsing and
    rewriting the statement produced (only its kind and counts are logged).

    >>> describe_cache("host")
    """
    logger = HOST if layer == "host" else ROOT
    if not logger.isEnabledFor(logging.DEBUG):
        return
    if described is None:
        logger.debug("describe: %s cache hit", layer)
        return
    parameters = getattr(described, "parameters", ())
    logger.debug(
        "describe: %s cache miss; described a %s statement with %d parameter(s), %d of them "
        "encrypted, and %d enclave operation(s)",
        layer,
        getattr(described, "kind", "?"),
        len(parameters),
        sum(1 for parameter in parameters if getattr(parameter, "target", None) is not None),
        len(getattr(described, "enclave_operations", ())),
    )


def enclave_query(phase: Literal["begin", "end"], operations: int, *, stages: int = 0) -> None:
    """DEBUG on ``enclavesql.enclave``: an enclave query begins or ends.

    >>> enclave_query("begin", 2)
    """
    if ENCLAVE.isEnabledFor(logging.DEBUG):
        ENCLAVE.debug(
            "enclave query %s: %d operation(s), %d extra stage(s)", phase, operations, stages
        )


def key_unwrapped(provider: str, *, from_cache: bool) -> None:
    """DEBUG on ``enclavesql.keys``: a column encryption key was needed, and came from the CEK
    cache or was unwrapped by the key store ``provider``.

    >>> key_unwrapped("PEM_FILE", from_cache=True)
    """
    if KEYS.isEnabledFor(logging.DEBUG):
        source = "the CEK cache" if from_cache else "its key store (unwrapped)"
        KEYS.debug("column encryption key via %s from %s", provider, source)


def catalog_changed(changes: Sequence[object], version: int) -> None:
    """INFO on ``enclavesql.host``: catalog changes committed, by kind and object name.

    >>> catalog_changed([], 3)
    """
    if HOST.isEnabledFor(logging.INFO):
        described = ", ".join(_change_text(change) for change in changes) or "none"
        HOST.info("catalog version %d: %s", version, described)


def plaintext_ddl(first_word: str, version: int) -> None:
    """INFO on ``enclavesql.host``: a statement that may change the schema ran (its first
    keyword only, such as CREATE or ATTACH).

    >>> plaintext_ddl("CREATE", 4)
    """
    if HOST.isEnabledFor(logging.INFO):
        HOST.info("catalog version %d: %s statement", version, first_word.upper()[:20])


def rotation(milestone: str, *, table: str = "", column: str = "", rows: int = -1) -> None:
    """INFO on ``enclavesql``: a rotation or in-place encryption milestone (``milestone`` is a
    fixed phrase of the caller, such as "column rewritten").

    >>> rotation("column rewritten", table="t", column="c", rows=10)
    """
    if ROOT.isEnabledFor(logging.INFO):
        where = f" {table}.{column}" if table else ""
        count = f" ({rows} rows)" if rows >= 0 else ""
        ROOT.info("rotation: %s%s%s", milestone, where, count)


def _change_text(change: object) -> str:
    # Catalog changes name keys, tables and columns (names are metadata, fine to log); the
    # wrapped CEK values and signatures they may hold are left out.
    kind = type(change).__name__
    names = [
        str(getattr(change, field))
        for field in ("name", "table", "column", "cek_name", "cmk_name")
        if isinstance(getattr(change, field, None), str)
    ]
    return f"{kind}({', '.join(names)})" if names else kind

"""Which shell input may be written to the history file: never text that holds a literal aimed at
an encrypted column, since the history file is a plaintext copy of what the user typed.

It decides with the pure SQL front end against the shell's catalog and fails closed when it
cannot tell. It must not run SQL, open files other than the history, or rewrite what is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.sql.catalog import CatalogSnapshot
from engine.sql.describe import describe_sql

__all__ = ["may_remember", "open_history"]

_ENCRYPTED_WITH = re.compile(r"\bENCRYPTED\s+WITH\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def may_remember(text: str, catalog: CatalogSnapshot) -> bool:
    """Whether ``text`` may go to the history file.

    It may not when the SQL front end lifts a literal out of it (a literal compared with or
    written to an encrypted column). When the text cannot be described (a syntax error, a table
    created in the same input), it may not if it names a table with encrypted columns or holds
    ``ENCRYPTED WITH``: a typo must not be the way a secret reaches the disk.

    >>> empty = CatalogSnapshot(1)
    >>> may_remember("SELECT 1;", empty), may_remember(".tables", empty)
    (True, True)
    >>> may_remember("CREATE TABLE t (a INT ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = k)); x", empty)
    False
    >>> may_remember(".explain CREATE TABLE t (a INT ENCRYPTED WITH (X = 1))", empty)
    False
    """
    stripped = text.lstrip()
    if stripped.startswith("."):
        # Only .explain carries SQL; its statement is judged like one typed at the prompt.
        command, _, argument = stripped.partition(" ")
        if command.casefold() != ".explain" or not argument.strip():
            return True
        text = argument
    try:
        plans = describe_sql(text, catalog, enclave_available=False)
    except Exception:  # noqa: BLE001 - any failure to describe means "cannot tell"
        return not _may_hold_secrets(text, catalog)
    return not any(spec.source[0] == "literal" for plan in plans for spec in plan.parameters)


def _may_hold_secrets(text: str, catalog: CatalogSnapshot) -> bool:
    if _ENCRYPTED_WITH.search(text):
        return True
    encrypted = {table.name.casefold() for table in catalog.tables if table.encrypted}
    return any(word.casefold() in encrypted for word in _WORD.findall(text))


def open_history(path: str, catalog: Callable[[], CatalogSnapshot]) -> Any:
    """A prompt_toolkit FileHistory at ``path`` that writes only what ``may_remember`` allows;
    the rest stays in memory for this session's up-arrow and is never written."""
    from prompt_toolkit.history import FileHistory

    class _FilteredFileHistory(FileHistory):
        def store_string(self, string: str) -> None:
            if may_remember(string, catalog()):
                super().store_string(string)

    return _FilteredFileHistory(path)

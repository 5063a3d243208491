"""Tab completion for the shell: dot commands, SQL keywords, and the tables and columns of the
catalog (encrypted columns included, marked as such).

It reads names through a callable the shell gives it and never runs SQL on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from sqlglot.tokens import Tokenizer

from engine.repl.commands import COMMANDS
from engine.sql.catalog import CatalogSnapshot

__all__ = ["SqlCompleter", "KEYWORDS"]

# sqlglot's keyword table covers DuckDB's statements; multi-word entries are left out because
# completion works word by word.
KEYWORDS: tuple[str, ...] = tuple(
    sorted(
        {word for word in Tokenizer.KEYWORDS if re.fullmatch(r"[A-Z][A-Z_]*", word)}
        | {"ENCRYPTED", "COLUMN_ENCRYPTION_KEY", "ENCRYPTION_TYPE", "DETERMINISTIC", "RANDOMIZED"}
    )
)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
# After these words a table name is what the user most likely wants, so tables come first.
_TABLE_CONTEXT = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE|DESCRIBE)\s+\w*$", re.IGNORECASE)


class SqlCompleter(Completer):
    """Completes the word before the cursor.

    >>> from engine.sql.catalog import ColumnInfo, TableInfo
    >>> patients = TableInfo("patients", (ColumnInfo("ssn", "CHAR(11)"),))
    >>> catalog = CatalogSnapshot(0, tables=(patients,))
    >>> completer = SqlCompleter(lambda: catalog)
    >>> [c.text for c in completer.get_completions(Document("SELECT * FROM pat"), CompleteEvent())]
    ['patients']
    >>> [c.text for c in completer.get_completions(Document(".sch"), CompleteEvent())]
    ['.schema']
    """

    def __init__(self, catalog: Callable[[], CatalogSnapshot]) -> None:
        self._catalog = catalog

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        if "\n" not in before and before.lstrip().startswith(".") and " " not in before.strip():
            word = before.strip()
            for name in COMMANDS:
                if ("." + name).startswith(word.lower()):
                    yield Completion("." + name, -len(word), display_meta=COMMANDS[name].summary)
            return
        match = _WORD.search(before)
        if match is None:
            return
        word = match.group(0)
        folded = word.casefold()
        try:
            catalog = self._catalog()
        except Exception:  # noqa: BLE001 - completion must never break typing
            catalog = CatalogSnapshot(0)
        tables = [
            table.name for table in catalog.tables if table.name.casefold().startswith(folded)
        ]
        columns: dict[str, str] = {}
        for table in catalog.tables:
            for column in table.columns:
                if column.name.casefold().startswith(folded) and column.name not in columns:
                    meta = "encrypted column" if column.encryption is not None else "column"
                    columns[column.name] = f"{meta} of {table.name}"
        keywords = [keyword for keyword in KEYWORDS if keyword.startswith(word.upper())]
        # Keywords follow the case the user types them in.
        if word.islower():
            keywords = [keyword.lower() for keyword in keywords]
        table_items = [Completion(name, -len(word), display_meta="table") for name in tables]
        column_items = [
            Completion(name, -len(word), display_meta=meta) for name, meta in columns.items()
        ]
        keyword_items = [
            Completion(keyword, -len(word), display_meta="keyword") for keyword in keywords
        ]
        if _TABLE_CONTEXT.search(before):
            yield from table_items
            yield from column_items
        else:
            yield from column_items
            yield from table_items
        yield from keyword_items

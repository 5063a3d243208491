"""Split shell input into complete SQL statements, each ending in `;`, with sqlglot's tokenizer.

Quotes, quoted names, dollar-quoted strings and comments are the tokenizer's business, so a `;`
inside any of them never ends a statement. It does not parse or validate SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from engine.sql.dialect import EnclaveDuckDB

__all__ = ["Split", "split_statements", "is_complete", "tokenize"]

_DIALECT = EnclaveDuckDB()


def tokenize(text: str) -> list[Token] | None:
    """The tokens of ``text``, or None while a string, quoted name or comment is still open.

    >>> [token.text for token in tokenize("SELECT 'a;b';")]
    ['SELECT', 'a;b', ';']
    >>> tokenize("SELECT 'open") is None
    True
    """
    try:
        return list(_DIALECT.tokenize(text))
    except TokenError:
        return None


@dataclass(frozen=True)
class Split:
    """Complete statements (without their `;`) and the unfinished text after the last `;`."""

    statements: tuple[str, ...]
    remainder: str


def split_statements(text: str) -> Split:
    """Cut ``text`` at every `;` that is a token of its own.

    Text after the last `;` is the remainder, kept verbatim so that the caller can wait for more
    input; it is empty when only whitespace or comments follow. Empty statements (`;;`) vanish.

    >>> split_statements("SELECT ';' AS a; -- x;y\\nSELECT 2;\\nSELECT")
    Split(statements=("SELECT ';' AS a", '-- x;y\\nSELECT 2'), remainder='SELECT')
    >>> split_statements("SELECT 'unterminated;").remainder
    "SELECT 'unterminated;"
    """
    tokens = tokenize(text)
    if tokens is None:
        # An open quote or comment: everything belongs to the statement still being typed.
        return Split((), text.strip())
    statements: list[str] = []
    start = 0
    pending = False
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            chunk = text[start : token.start].strip()
            if pending and chunk:
                statements.append(chunk)
            start = token.end + 1
            pending = False
        else:
            pending = True
    remainder = text[start:].strip() if pending else ""
    return Split(tuple(statements), remainder)


def is_complete(text: str) -> bool:
    """True when ``text`` holds at least one statement and nothing unfinished after it.

    >>> is_complete("SELECT 1;"), is_complete("SELECT 1"), is_complete("SELECT ';'")
    (True, False, False)
    """
    split = split_statements(text)
    return bool(split.statements) and not split.remainder

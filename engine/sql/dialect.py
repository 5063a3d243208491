"""The EnclaveDuckDB sqlglot dialect: DuckDB plus the T-SQL Always Encrypted DDL, and parsing.

It turns SQL text into ASTs (and ASTs back into text) and reports syntax and option errors as
PEP 249 errors with line and column. It must not consult the catalog, do I/O or touch keys, and
it must never echo a literal from the statement in an error message.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NoReturn

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.parsers.duckdb import DuckDBParser
from sqlglot.tokenizer_core import Token, TokenizerCore, TokenType

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.ae_nodes import (
    AlterColumnEncryption,
    AlterColumnEncryptionKey,
    BinaryLiteral,
    ColumnEncryptionKeyValueSpec,
    CreateColumnEncryptionKey,
    CreateColumnMasterKey,
    DropColumnEncryptionKey,
    DropColumnMasterKey,
    EncryptedWithColumnConstraint,
    ExportDatabase,
    ImportDatabase,
)
from engine.types import supported_type_names

__all__ = [
    "CELL_ALGORITHM",
    "CEK_ALGORITHM",
    "ENCRYPTION_TYPES",
    "EnclaveDuckDB",
    "parse_statements",
    "to_sql",
]

# The only algorithms the formats in spec sections 1 and 2.1 define.
CELL_ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA_256"
CEK_ALGORITHM = "RSA_OAEP"
ENCRYPTION_TYPES = ("DETERMINISTIC", "RANDOMIZED")

# Words after ALTER COLUMN c that belong to DuckDB's own ALTER COLUMN forms, not to the
# T-SQL "ALTER COLUMN c <type>" form.
_DUCKDB_ALTER_COLUMN_WORDS = frozenset({"TYPE", "SET", "DROP", "COMMENT", "RENAME", "ADD"})


def canonical_type_text(text: str) -> str:
    """The canonical spelling of a declared type: upper case, no spaces around ( , ).

    >>> canonical_type_text(" nvarchar ( 50 ) ")
    'NVARCHAR(50)'
    """
    text = " ".join(text.split()).upper()
    return re.sub(r"\s*([(),])\s*", r"\1", text).replace(",", ", ").strip()


# Type names an encrypted column may be declared with (engine.types); sqlglot's DuckDB parser
# knows only some of them as types.
_TSQL_TYPE_NAMES = frozenset(supported_type_names())


def _base_type_name(dtype: exp.DataType) -> str:
    """The declared type name without its parameters: ``DATETIME2(7)`` -> ``DATETIME2``."""
    return str(dtype.meta.get("declared_type") or "").split("(", 1)[0].strip()


def _column_of(sql: str, token: Token) -> int:
    """The 1-based column where ``token`` starts (sqlglot's own ``col`` is its end)."""
    return token.start - sql.rfind("\n", 0, token.start)


class EnclaveDuckDBTokenizer(DuckDB.Tokenizer):
    """DuckDB's tokenizer plus the ``X'01ff'`` blob literal, which DuckDB accepts but sqlglot's
    DuckDB tokenizer reads as the name ``X`` followed by a string (a syntax error)."""

    # Upper case first: the dialect writes hex literals back with the first spelling, and
    # DuckDB names a result column after the upper-case form (``X'01ff'``).
    HEX_STRINGS: ClassVar[list[str | tuple[str, str]]] = [("X'", "'"), ("x'", "'")]

    def _init_core(self) -> TokenizerCore:
        core = super()._init_core()
        # sqlglot would then also read 0x1F as a hex string, but DuckDB reads it as the number 0
        # followed by the alias x1F (and CMK/CEK options rely on that, see _parse_binary_literal).
        core.has_hex_strings = False
        return core


class EnclaveDuckDBParser(DuckDBParser):
    """DuckDB's parser with the AE key DDL statements and the ENCRYPTED WITH column option."""

    STATEMENT_PARSERS: ClassVar[dict[TokenType, Callable[[Any], Any]]] = {
        **DuckDBParser.STATEMENT_PARSERS,
        TokenType.CREATE: lambda self: self._parse_ae_create(),
        TokenType.DROP: lambda self: self._parse_ae_drop(),
        TokenType.ALTER: lambda self: self._parse_ae_alter(),
    }

    PRIMARY_PARSERS: ClassVar[dict[TokenType, Callable[[Any, Token], Any]]] = {
        **DuckDBParser.PRIMARY_PARSERS,
        TokenType.HEX_STRING: lambda self, token: self._parse_blob_literal(token),
    }

    CONSTRAINT_PARSERS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        **DuckDBParser.CONSTRAINT_PARSERS,
        "ENCRYPTED": lambda self: self._parse_encrypted_with(),
    }

    # ---- errors -------------------------------------------------------------------------

    def raise_error(self, message: str, token: Any = None) -> None:
        # Report where the offending token starts; sqlglot's own column is where it ends.
        where = token or self._curr or self._prev
        try:
            super().raise_error(message, token) if token else super().raise_error(message)
        except ParseError as error:
            if where is not None and error.errors:
                error.errors[0]["col"] = _column_of(self.sql, where)
            raise

    def _parse_types(self, *args: Any, **kwargs: Any) -> exp.Expr | None:
        # DuckDB folds CHAR/VARCHAR/NVARCHAR into TEXT, but an encrypted column's declared type
        # decides how its plaintext is normalized (spec section 3), so keep the text as written.
        start = self._curr
        result = super()._parse_types(*args, **kwargs)
        if isinstance(result, exp.DataType) and start is not None and self._prev is not None:
            written = self.sql[start.start : self._prev.end + 1]
            result.meta["declared_type"] = canonical_type_text(written)
        return result

    def _ae_fail(
        self, message: str, token: Token | None = None, cls: type[Exception] = ProgrammingError
    ) -> NoReturn:
        token = token or self._curr or self._prev
        where = f" at line {token.line}, column {_column_of(self.sql, token)}" if token else ""
        raise cls(f"{message}{where}")

    def _parse_blob_literal(self, token: Token) -> exp.Expr:
        # The tokenizer already refused non-hex digits; an odd count DuckDB refuses as well.
        if len(token.text) % 2:
            self._ae_fail("a blob literal X'...' needs two hex digits per byte", token)
        return self.expression(exp.HexString(this=token.text), token)

    # ---- statements ---------------------------------------------------------------------

    def _parse_statement(self) -> exp.Expr | None:
        # sqlglot's DuckDB dialect has no EXPORT/IMPORT DATABASE; neither word is a keyword
        # there, so they are recognized by text, and only when DATABASE follows.
        word = self._curr.text.upper() if self._curr is not None else ""
        if word in ("EXPORT", "IMPORT") and self._next and self._next.text.upper() == "DATABASE":
            self._advance(2)
            return self._parse_export_database() if word == "EXPORT" else self._parse_import()
        return super()._parse_statement()

    def _parse_database_directory(self, statement: str) -> exp.Expression:
        token = self._curr
        if token.token_type != TokenType.STRING:
            # At the end of the text the current token is sqlglot's sentinel: point at the last.
            where = self._prev if token.token_type == TokenType.SENTINEL else token
            self._ae_fail(f"{statement} expects the directory as a quoted string", where)
        self._advance()
        return exp.Literal.string(token.text)

    def _parse_export_database(self) -> exp.Expr:
        statement = "EXPORT DATABASE"
        database = None
        if self._curr.token_type not in (TokenType.STRING, TokenType.SENTINEL):
            database = self._ae_name("database to export")
            if not self._match_text_seq("TO"):
                self._ae_fail(f"{statement} {database.name} expects TO 'directory'")
        directory = self._parse_database_directory(statement)
        options = None
        if self._curr.token_type == TokenType.L_PAREN:
            # The options go to DuckDB exactly as written; DuckDB validates them.
            first, depth = self._curr, 0
            for offset, last in enumerate(self._tokens[self._index :]):
                if last.token_type == TokenType.SEMICOLON:
                    break
                depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(last.token_type, 0)
                if depth == 0:
                    options = exp.Literal.string(self.sql[first.start : last.end + 1])
                    self._advance(offset + 1)
                    break
            if options is None:
                self._ae_fail(f"{statement} expects ')' after its options")
        return self.expression(ExportDatabase(this=directory, db=database, options=options))

    def _parse_import(self) -> exp.Expr:
        return self.expression(
            ImportDatabase(this=self._parse_database_directory("IMPORT DATABASE"))
        )

    def _parse_ae_create(self) -> exp.Expr | None:
        if self._match_text_seq("COLUMN", "MASTER", "KEY"):
            return self._parse_create_cmk()
        if self._match_text_seq("COLUMN", "ENCRYPTION", "KEY"):
            return self._parse_create_cek()
        return self._parse_create()

    def _parse_ae_drop(self) -> exp.Expr | None:
        if self._match_text_seq("COLUMN", "MASTER", "KEY"):
            return self.expression(DropColumnMasterKey(this=self._ae_name("column master key")))
        if self._match_text_seq("COLUMN", "ENCRYPTION", "KEY"):
            name = self._ae_name("column encryption key")
            return self.expression(DropColumnEncryptionKey(this=name))
        return self._parse_drop()

    def _parse_ae_alter(self) -> exp.Expr | None:
        if not self._match_text_seq("COLUMN", "ENCRYPTION", "KEY"):
            return self._parse_alter()
        name = self._ae_name("column encryption key")
        statement = "ALTER COLUMN ENCRYPTION KEY"
        if self._match_text_seq("ADD", "VALUE"):
            action = "ADD"
        elif self._match_text_seq("DROP", "VALUE"):
            action = "DROP"
        else:
            self._ae_fail(f"{statement} expects ADD VALUE (...) or DROP VALUE (...)")
        value = self._parse_cek_value(statement, dropping=action == "DROP")
        return self.expression(AlterColumnEncryptionKey(this=name, action=action, expression=value))

    def _parse_create_cmk(self) -> exp.Expr:
        statement = "CREATE COLUMN MASTER KEY"
        name = self._ae_name("column master key")
        if not self._match(TokenType.WITH) or not self._match(TokenType.L_PAREN):
            self._ae_fail(f"{statement} expects WITH ( KEY_STORE_PROVIDER_NAME = ..., ... )")
        options: dict[str, exp.Expression] = {}
        enclave = False
        while True:
            start = self._curr
            if self._match_text_seq("ENCLAVE_COMPUTATIONS"):
                if enclave:
                    self._ae_fail(f"{statement}: ENCLAVE_COMPUTATIONS is given twice", start)
                enclave = True
                if self._match(TokenType.L_PAREN):
                    sig = self._parse_ae_options(statement, {"SIGNATURE": "binary"}, {"SIGNATURE"})
                    options["SIGNATURE"] = sig["SIGNATURE"]
            else:
                key, value = self._parse_ae_option(
                    statement, {"KEY_STORE_PROVIDER_NAME": "string", "KEY_PATH": "string"}, options
                )
                options[key] = value
            if not self._match(TokenType.COMMA):
                break
        if not self._match(TokenType.R_PAREN):
            self._ae_fail(f"{statement} expects ')' after its options")
        for required in ("KEY_STORE_PROVIDER_NAME", "KEY_PATH"):
            if required not in options:
                self._ae_fail(
                    f"{statement} {name.name} is missing {required}; add {required} = '...'"
                )
        return self.expression(
            CreateColumnMasterKey(
                this=name,
                provider=options["KEY_STORE_PROVIDER_NAME"],
                key_path=options["KEY_PATH"],
                enclave_computations=exp.true() if enclave else None,
                signature=options.get("SIGNATURE"),
            )
        )

    def _parse_create_cek(self) -> exp.Expr:
        statement = "CREATE COLUMN ENCRYPTION KEY"
        name = self._ae_name("column encryption key")
        if not self._match_text_seq("WITH", "VALUES"):
            self._ae_fail(f"{statement} expects WITH VALUES ( COLUMN_MASTER_KEY = ..., ... )")
        values = [self._parse_cek_value(statement, dropping=False)]
        while self._match(TokenType.COMMA):
            values.append(self._parse_cek_value(statement, dropping=False))
        return self.expression(CreateColumnEncryptionKey(this=name, expressions=values))

    def _parse_cek_value(self, statement: str, *, dropping: bool) -> exp.Expression:
        if not self._match(TokenType.L_PAREN):
            self._ae_fail(f"{statement} expects '(' before COLUMN_MASTER_KEY = ...")
        if dropping:
            allowed, required = {"COLUMN_MASTER_KEY": "identifier"}, {"COLUMN_MASTER_KEY"}
        else:
            allowed = {
                "COLUMN_MASTER_KEY": "identifier",
                "ALGORITHM": "cek_algorithm",
                "ENCRYPTED_VALUE": "binary",
            }
            required = {"COLUMN_MASTER_KEY", "ALGORITHM"}
        options = self._parse_ae_options(statement, allowed, required)
        return self.expression(
            ColumnEncryptionKeyValueSpec(
                this=options["COLUMN_MASTER_KEY"],
                algorithm=options.get("ALGORITHM"),
                encrypted_value=options.get("ENCRYPTED_VALUE"),
            )
        )

    def _parse_encrypted_with(self) -> exp.Expression:
        statement = "ENCRYPTED WITH"
        if not self._match(TokenType.WITH) or not self._match(TokenType.L_PAREN):
            self._ae_fail(f"{statement} expects ( COLUMN_ENCRYPTION_KEY = ..., ... )")
        options = self._parse_ae_options(
            statement,
            {
                "COLUMN_ENCRYPTION_KEY": "identifier",
                "ENCRYPTION_TYPE": "encryption_type",
                "ALGORITHM": "cell_algorithm",
            },
            {"COLUMN_ENCRYPTION_KEY", "ENCRYPTION_TYPE", "ALGORITHM"},
        )
        return self.expression(
            EncryptedWithColumnConstraint(
                this=options["COLUMN_ENCRYPTION_KEY"],
                encryption_type=options["ENCRYPTION_TYPE"],
                algorithm=options["ALGORITHM"],
            )
        )

    def _parse_alter_table_alter(self) -> exp.Expr | None:
        # T-SQL spells a type change "ALTER COLUMN c <type> [ENCRYPTED WITH (...)]", without
        # DuckDB's TYPE keyword; DuckDB's own forms fall through to the inherited parser.
        index = self._index
        self._match(TokenType.COLUMN)
        column = self._parse_field(any_token=True)
        if (
            column is not None
            and self._curr is not None
            and self._curr.text.upper() not in _DUCKDB_ALTER_COLUMN_WORDS
        ):
            # T-SQL names DuckDB lacks (DATETIME2, UNIQUEIDENTIFIER, ...) parse as user-defined
            # types; take those the engine knows, so they do not fall through to DuckDB's form.
            dtype = self._parse_types(allow_identifiers=True)
            if isinstance(dtype, exp.DataType) and (
                not dtype.is_type(exp.DType.USERDEFINED)
                or _base_type_name(dtype) in _TSQL_TYPE_NAMES
            ):
                encryption = None
                if self._match_text_seq("ENCRYPTED"):
                    encryption = self._parse_encrypted_with()
                return self.expression(
                    AlterColumnEncryption(this=column, dtype=dtype, encryption=encryption)
                )
        self._retreat(index)
        return super()._parse_alter_table_alter()

    # ---- options ------------------------------------------------------------------------

    def _ae_name(self, what: str) -> exp.Expression:
        name = self._parse_id_var(any_token=False)
        if not isinstance(name, exp.Identifier):
            self._ae_fail(f"expected the name of the {what}")
        return name

    def _parse_ae_options(
        self, statement: str, allowed: dict[str, str], required: set[str]
    ) -> dict[str, exp.Expression]:
        """Parse ``NAME = value, ...`` up to and including the closing parenthesis."""
        options: dict[str, exp.Expression] = {}
        key, value = self._parse_ae_option(statement, allowed, options)
        options[key] = value
        while self._match(TokenType.COMMA):
            key, value = self._parse_ae_option(statement, allowed, options)
            options[key] = value
        if not self._match(TokenType.R_PAREN):
            self._ae_fail(f"{statement} expects ',' or ')' after {key}")
        for name in sorted(required - options.keys()):
            self._ae_fail(f"{statement} is missing {name}; add {name} = ...", self._prev)
        return options

    def _parse_ae_option(
        self, statement: str, allowed: dict[str, str], seen: dict[str, exp.Expression]
    ) -> tuple[str, exp.Expression]:
        start = self._curr
        if start is None:
            self._ae_fail(f"{statement} ends before its options do", self._prev)
        key = start.text.upper()
        if start.token_type == TokenType.STRING or key not in allowed:
            expected = ", ".join(sorted(allowed))
            self._ae_fail(f"{statement}: unknown option {key!s:.40}; expected one of {expected}")
        if key in seen:
            self._ae_fail(f"{statement}: option {key} is given twice")
        self._advance()
        if not self._match(TokenType.EQ):
            self._ae_fail(f"{statement}: option {key} expects '=' and a value")
        return key, self._parse_ae_value(statement, key, allowed[key])

    def _parse_ae_value(self, statement: str, key: str, kind: str) -> exp.Expression:
        token = self._curr
        if token is None:
            self._ae_fail(f"{statement}: option {key} has no value", self._prev)
        if kind == "identifier":
            name = self._parse_id_var(any_token=False)
            if not isinstance(name, exp.Identifier):
                self._ae_fail(f"{statement}: option {key} expects a key name")
            return name
        if kind == "binary":
            return self._parse_binary_literal(statement, key)
        if kind == "encryption_type":
            word = token.text.upper()
            if token.token_type == TokenType.STRING or word not in ENCRYPTION_TYPES:
                self._ae_fail(f"{statement}: ENCRYPTION_TYPE must be DETERMINISTIC or RANDOMIZED")
            self._advance()
            return exp.Var(this=word)
        # The remaining kinds are quoted strings.
        if token.token_type not in (TokenType.STRING, TokenType.NATIONAL_STRING):
            self._ae_fail(f"{statement}: option {key} expects a quoted string")
        self._advance()
        value = token.text
        if kind == "cek_algorithm" and value.upper() != CEK_ALGORITHM:
            self._ae_fail(
                f"{statement}: ALGORITHM is not supported; the supported one is '{CEK_ALGORITHM}'",
                token,
                NotSupportedError,
            )
        if kind == "cell_algorithm" and value.upper() != CELL_ALGORITHM:
            self._ae_fail(
                f"{statement}: ALGORITHM is not supported; the supported one is '{CELL_ALGORITHM}'",
                token,
                NotSupportedError,
            )
        if kind in ("cek_algorithm", "cell_algorithm"):
            value = value.upper()
        return exp.Literal.string(value)

    def _parse_binary_literal(self, statement: str, key: str) -> exp.Expression:
        # DuckDB tokenizes 0x01AB as the number 0 followed by the word x01AB; the two tokens
        # must touch, or it was something else (such as "0 x01").
        zero, word = self._curr, self._next
        if (
            zero is None
            or word is None
            or zero.token_type != TokenType.NUMBER
            or zero.text != "0"
            or word.token_type != TokenType.VAR
            or zero.end + 1 != word.start
            or word.text[:1] not in ("x", "X")
        ):
            self._ae_fail(f"{statement}: option {key} expects a binary literal 0x...")
        digits = word.text[1:]
        if not digits or len(digits) % 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            self._ae_fail(
                f"{statement}: option {key} must be 0x followed by an even number of hex digits",
                zero,
            )
        self._advance(2)
        return BinaryLiteral(this=digits.upper())


def _options_sql(gen: DuckDBGenerator, pairs: list[tuple[str, exp.Expression | None]]) -> str:
    return ", ".join(f"{name} = {gen.sql(value)}" for name, value in pairs if value is not None)


def _cmk_sql(gen: DuckDBGenerator, e: exp.Expression) -> str:
    options = _options_sql(
        gen,
        [("KEY_STORE_PROVIDER_NAME", e.args["provider"]), ("KEY_PATH", e.args["key_path"])],
    )
    if e.args.get("enclave_computations"):
        signature = e.args.get("signature")
        options += ", ENCLAVE_COMPUTATIONS"
        if signature is not None:
            options += f" (SIGNATURE = {gen.sql(signature)})"
    return f"CREATE COLUMN MASTER KEY {gen.sql(e, 'this')} WITH ({options})"


def _cek_value_sql(gen: DuckDBGenerator, e: exp.Expression) -> str:
    options = _options_sql(
        gen,
        [
            ("COLUMN_MASTER_KEY", e.this),
            ("ALGORITHM", e.args.get("algorithm")),
            ("ENCRYPTED_VALUE", e.args.get("encrypted_value")),
        ],
    )
    return f"({options})"


def _encrypted_with_sql(gen: DuckDBGenerator, e: exp.Expression) -> str:
    options = _options_sql(
        gen,
        [
            ("COLUMN_ENCRYPTION_KEY", e.this),
            ("ENCRYPTION_TYPE", e.args["encryption_type"]),
            ("ALGORITHM", e.args["algorithm"]),
        ],
    )
    return f"ENCRYPTED WITH ({options})"


def _declared_type_sql(gen: DuckDBGenerator, dtype: exp.Expression) -> str:
    return str(dtype.meta.get("declared_type") or gen.sql(dtype))


def _alter_column_encryption_sql(gen: DuckDBGenerator, e: exp.Expression) -> str:
    encryption = e.args.get("encryption")
    suffix = f" {gen.sql(encryption)}" if encryption is not None else ""
    return f"ALTER COLUMN {gen.sql(e, 'this')} {_declared_type_sql(gen, e.args['dtype'])}{suffix}"


def _export_database_sql(gen: DuckDBGenerator, e: exp.Expression) -> str:
    database = e.args.get("db")
    target = f"{gen.sql(database)} TO " if database is not None else ""
    options = e.args.get("options")
    suffix = f" {options.name}" if options is not None else ""
    return f"EXPORT DATABASE {target}{gen.sql(e, 'this')}{suffix}"


class EnclaveDuckDBGenerator(DuckDBGenerator):
    """DuckDB's generator, plus the AE DDL nodes so every statement round-trips to text."""

    TRANSFORMS = {
        **DuckDBGenerator.TRANSFORMS,
        BinaryLiteral: lambda self, e: f"0x{e.name}",
        # sqlglot writes UNHEX('..') for DuckDB; X'..' keeps the type (BLOB) and the result
        # column name DuckDB gives the literal as written.
        exp.HexString: lambda self, e: f"X'{e.this}'",
        CreateColumnMasterKey: _cmk_sql,
        DropColumnMasterKey: lambda self, e: f"DROP COLUMN MASTER KEY {self.sql(e, 'this')}",
        ColumnEncryptionKeyValueSpec: _cek_value_sql,
        CreateColumnEncryptionKey: lambda self, e: (
            f"CREATE COLUMN ENCRYPTION KEY {self.sql(e, 'this')} WITH VALUES "
            + ", ".join(self.sql(v) for v in e.expressions)
        ),
        AlterColumnEncryptionKey: lambda self, e: (
            f"ALTER COLUMN ENCRYPTION KEY {self.sql(e, 'this')} "
            f"{e.args['action']} VALUE {self.sql(e, 'expression')}"
        ),
        DropColumnEncryptionKey: lambda self, e: (
            f"DROP COLUMN ENCRYPTION KEY {self.sql(e, 'this')}"
        ),
        EncryptedWithColumnConstraint: _encrypted_with_sql,
        ExportDatabase: _export_database_sql,
        ImportDatabase: lambda self, e: f"IMPORT DATABASE {self.sql(e, 'this')}",
        AlterColumnEncryption: _alter_column_encryption_sql,
    }

    def columndef_sql(self, expression: exp.ColumnDef, sep: str = " ") -> str:
        # An encrypted column keeps its declared type as written (VARCHAR is not NVARCHAR).
        kind = expression.args.get("kind")
        if kind is not None and expression.find(EncryptedWithColumnConstraint):
            expression = expression.copy()
            expression.set("kind", exp.Var(this=_declared_type_sql(self, kind)))
        return super().columndef_sql(expression, sep)


class EnclaveDuckDB(DuckDB):
    """The DuckDB dialect with T-SQL Always Encrypted DDL (case-insensitive keywords)."""

    Tokenizer = EnclaveDuckDBTokenizer
    Parser = EnclaveDuckDBParser
    Generator = EnclaveDuckDBGenerator


_DIALECT = EnclaveDuckDB()


_LITERAL_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.NUMBER,
        TokenType.BYTE_STRING,
        TokenType.HEX_STRING,
    }
)
_TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: \d+.*?>")


def _scrub(description: str, sql_text: str) -> str:
    """Make a parser message readable and free of any literal of the statement."""

    def token_text(match: re.Match[str]) -> str:
        if TokenType[match.group(1)] in _LITERAL_TOKENS:
            return "a literal"
        return f"'{match.group(2)}'"

    description = _TOKEN_REPR.sub(token_text, description)
    try:
        tokens = _DIALECT.tokenize(sql_text)
    except TokenError:
        return "the statement could not be read"
    for token in tokens:
        if token.token_type in _LITERAL_TOKENS and token.text:
            pattern = r"\b" + re.escape(token.text) + r"\b" if token.text.isalnum() else None
            if pattern is not None:
                description = re.sub(pattern, "<literal>", description)
            else:
                description = description.replace(token.text, "<literal>")
    return description


_quiet = threading.local()


class _DropWhileQuiet(logging.Filter):
    """sqlglot logs warnings that quote the statement (``'<sql>' contains unsupported syntax.
    Falling back to parsing as a 'Command'.``), literals and all; while this module parses or
    generates, no such record may reach a handler, because the text can hold plaintext."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "depth", 0)


logging.getLogger("sqlglot").addFilter(_DropWhileQuiet())


@contextmanager
def _sqlglot_quiet() -> Iterator[None]:
    _quiet.depth = getattr(_quiet, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet.depth -= 1


def parse_statements(sql_text: str) -> list[exp.Expr]:
    """Parse SQL text (one or more statements) into ASTs of the EnclaveDuckDB dialect.

    Syntax errors raise ProgrammingError with the line and column.

    >>> [type(s).__name__ for s in parse_statements("DROP COLUMN MASTER KEY cmk1; SELECT 1")]
    ['DropColumnMasterKey', 'Select']
    >>> parse_statements("SELECT 1;\\nSELECT FROM WHERE")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: syntax error at line 2, column 13: ...
    """
    failure: ProgrammingError | None = None
    try:
        with _sqlglot_quiet():
            statements = _DIALECT.parse(sql_text)
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        description = _scrub(str(detail.get("description") or "invalid SQL"), sql_text)
        failure = ProgrammingError(
            f"syntax error at line {detail.get('line')}, column {detail.get('col')}: {description}"
        )
    except TokenError as error:
        # sqlglot's tokenizer refuses X'..' with a non-hex character under this wording (as
        # the cause of its "Error tokenizing" wrapper, which quotes the statement).
        cause = str(error.__cause__ or error)
        if cause.startswith("Numeric string contains invalid characters"):
            failure = ProgrammingError(
                "syntax error: a blob literal X'...' may hold only the hex digits 0-9 and a-f, "
                "two per byte"
            )
        else:
            failure = ProgrammingError(
                "syntax error: the statement could not be tokenized; "
                "check for an unterminated string or quoted name"
            )
    except RecursionError:
        # Found by tests/fuzz: deep nesting (or long runs of unary operators) exhausts the stack.
        failure = ProgrammingError(
            "the statement is nested too deeply to parse; simplify its expressions"
        )
    if failure is not None:
        # Raised here, not in a handler: sqlglot's errors quote the statement, literals
        # included, and would otherwise live on as the hidden __context__ of ours.
        raise failure
    parsed = [statement for statement in statements if statement is not None]
    _remember_source_text(sql_text, parsed)
    return parsed


SOURCE_SQL = "source_sql"


def _remember_source_text(sql_text: str, statements: list[exp.Expr]) -> None:
    """Store each statement's own text in ``meta["source_sql"]`` so that plaintext statements
    can reach DuckDB exactly as written. A chunk is only kept when it parses to the same AST,
    so a mismatch leaves the statement to be regenerated instead of running the wrong text."""
    tokens = _DIALECT.tokenize(sql_text)
    chunks: list[str] = []
    current: list[Token] = []
    for token in [*tokens, None]:
        if token is None or token.token_type == TokenType.SEMICOLON:
            if current:
                chunks.append(sql_text[current[0].start : current[-1].end + 1])
            current = []
        else:
            current.append(token)
    if len(chunks) != len(statements):
        return
    for chunk, statement in zip(chunks, statements, strict=True):
        if len(statements) == 1:
            statement.meta[SOURCE_SQL] = chunk
            continue
        with _sqlglot_quiet():
            same = _DIALECT.parse(chunk) == [statement]
        if same:
            statement.meta[SOURCE_SQL] = chunk


def to_sql(expression: exp.Expr) -> str:
    """Generate EnclaveDuckDB SQL text for an AST (AE DDL included).

    >>> to_sql(parse_statements("drop column encryption key CEK1")[0])
    'DROP COLUMN ENCRYPTION KEY CEK1'
    """
    with _sqlglot_quiet():
        return _DIALECT.generate(expression, copy=True)

"""Rewrite rule (annotation only): decide where each operation on an encrypted column can run.

Deterministic equality work runs natively in DuckDB on ciphertext; randomized work, and order
work on deterministic columns under enclave-enabled keys, needs the enclave; everything else
over an encrypted column is refused before it runs (fail closed).
Literals and ``?`` aimed at an encrypted column are marked with ``meta["ae_bind"]`` for
parameterize_literals. It must not rewrite the tree, and no message may contain a value.
"""

from __future__ import annotations

import re

from sqlglot import exp

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.catalog import CatalogSnapshot
from engine.sql.plan import EncryptionTarget
from engine.sql.resolve_columns import TARGET, base_origin, origin

__all__ = [
    "BIND",
    "ENCLAVE",
    "ENCLAVE_PREDICATES",
    "NATIVE_OPERATIONS",
    "classify_encrypted_operations",
    "literal_value",
]

BIND = "ae_bind"
ASSIGNED = "ae_assigned"
# Set on a predicate node the enclave evaluates: the EncryptionTarget of its column.
ENCLAVE = "ae_enclave"
# Set on the classified tree: (operation, column label) of each operation DuckDB runs on
# deterministic ciphertext, in the order met, for EXPLAIN.
NATIVE_OPERATIONS = "ae_native_operations"
# The predicates rewrite_enclave_predicates turns into enclave calls.
ENCLAVE_PREDICATES = frozenset(
    {"=", "<>", "<", "<=", ">", ">=", "BETWEEN", "IN", "NOT IN", "LIKE"}
    | {"IS NOT DISTINCT FROM", "IS DISTINCT FROM"}
)
# The aggregates rewrite_enclave_aggregates hands to the enclave.
ENCLAVE_AGGREGATES = frozenset(
    {"SUM", "AVG", "MIN", "MAX", "COUNT(DISTINCT)", "ORDER BY", "GROUP BY", "DISTINCT"}
)
# Set operations over enclave columns (rewrite_enclave_set_operations groups on group ids).
_SET_OPS = frozenset({"UNION", "INTERSECT", "EXCEPT"})

# Operators whose answer only depends on equality of the plaintexts.
_EQUALITY_OPS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
    exp.In: "IN",
}
# Operators that need order or content of the plaintexts.
_ORDER_OPS: dict[type[exp.Expr], str] = {
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.Between: "BETWEEN",
    exp.Like: "LIKE",
    exp.ILike: "ILIKE",
}
# What the enclave runs on a DETERMINISTIC column under an enclave-enabled key (its order, and
# the aggregates that need the values); equality work on it, COUNT(DISTINCT) included, stays
# native on ciphertext.
_DETERMINISTIC_ENCLAVE_OPS = frozenset(
    {"ORDER BY", "<", "<=", ">", ">=", "BETWEEN", "LIKE", "MIN", "MAX", "SUM", "AVG"}
)
_ORDER_AGGREGATES: dict[type[exp.Expr], str] = {
    exp.Min: "MIN",
    exp.Max: "MAX",
    exp.Sum: "SUM",
    exp.Avg: "AVG",
}
_CONSTRUCT_NAMES: dict[type[exp.Expr], str] = {
    exp.Add: "arithmetic (+)",
    exp.Sub: "arithmetic (-)",
    exp.Mul: "arithmetic (*)",
    exp.Div: "arithmetic (/)",
    exp.Mod: "arithmetic (%)",
    exp.Neg: "arithmetic (unary -)",
    exp.DPipe: "string concatenation (||)",
    exp.Cast: "CAST",
    exp.TryCast: "TRY_CAST",
    exp.Case: "CASE",
    exp.If: "CASE",
    exp.Coalesce: "COALESCE",
    exp.Window: "a window function",
    exp.Not: "NOT",
    exp.And: "AND",
    exp.Or: "OR",
    exp.Is: "IS (other than IS NULL)",
}


def literal_value(node: exp.Expr) -> tuple[bool, object]:
    """``(True, python value)`` when ``node`` is a constant the client can encrypt.

    >>> from sqlglot import parse_one
    >>> literal_value(parse_one("-42"))
    (True, -42)
    >>> literal_value(parse_one("'abc'"))
    (True, 'abc')
    >>> literal_value(parse_one("x"))
    (False, None)
    """
    from decimal import Decimal

    negative = False
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and node.this.is_number:
        negative, node = True, node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return True, node.this
        text = str(node.this)
        number: object = int(text) if text.lstrip("-").isdigit() else Decimal(text)
        return True, -number if negative else number  # type: ignore[operator]
    if isinstance(node, exp.National):
        return True, node.this
    if isinstance(node, exp.Boolean):
        return True, bool(node.this)
    # A blob literal X'01ff' is bytes; anything but pairs of hex digits is left to DuckDB.
    if isinstance(node, exp.HexString) and re.fullmatch(r"(?:[0-9a-fA-F]{2})*", node.this):
        return True, bytes.fromhex(node.this)
    # A typed literal such as DATE '2024-01-31': the client parses the text for the column.
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        return True, node.this.this
    return False, None


def _construct(node: exp.Expr) -> str:
    for cls, name in _CONSTRUCT_NAMES.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Func):
        return f"the function {node.sql_name()}"
    return f"the expression {type(node).__name__.upper()}"


class _Classifier:
    def __init__(self, catalog: CatalogSnapshot, enclave_available: bool) -> None:
        self.catalog = catalog
        self.enclave_available = enclave_available
        self.native: list[tuple[str, str]] = []

    # ---- outcomes -----------------------------------------------------------------------

    def needs_enclave(
        self, target: EncryptionTarget, op: str, node: exp.Expr | None = None
    ) -> None:
        """Randomized work: the enclave's job, or refused with what would allow it.

        A predicate the enclave can evaluate is marked with ``meta[ENCLAVE]`` for
        rewrite_enclave_predicates; other enclave work is refused until it is supported.
        """
        label = target.label
        enabled = self.catalog.enclave_enabled(target.cek_name)
        if target.encryption_type == "DETERMINISTIC":
            self._deterministic_order(target, op, node, enabled)
            return
        if enabled and self.enclave_available:
            if node is not None and op in ENCLAVE_PREDICATES | ENCLAVE_AGGREGATES | _SET_OPS:
                node.meta[ENCLAVE] = target
                return
            raise NotSupportedError(
                f"{label}: `{op}` over a RANDOMIZED column is not supported in the enclave "
                "yet; supported are =, <>, <, <=, >, >=, BETWEEN, IN, NOT IN, LIKE and "
                "IS [NOT] DISTINCT FROM with "
                "a literal or ? operand (or a column under the same key), SUM, AVG, MIN, MAX "
                "and COUNT(DISTINCT) in the outermost SELECT list (or one whose result it only "
                "selects), and its ORDER BY, GROUP BY and DISTINCT"
            )
        if enabled:
            raise ProgrammingError(
                f"{label} is RANDOMIZED; `{op}` runs in the enclave and needs a connection "
                "with attestation_protocol set"
            )
        raise ProgrammingError(
            f"{label} is RANDOMIZED; `{op}` needs an enclave-enabled column master key "
            "(ENCLAVE_COMPUTATIONS) and a connection with attestation_protocol set"
        )

    def _deterministic_order(
        self, target: EncryptionTarget, op: str, node: exp.Expr | None, enabled: bool
    ) -> None:
        """Order work on a DETERMINISTIC column: the enclave's job under an enclave-enabled key.

        Deterministic cells have the randomized cell format (only the IV is derived, not
        drawn), so the enclave ranks, compares and aggregates them alike. The host then learns
        their order on top of the equality it already sees (an aggregate's result cell is
        randomized); without the key or a session it is refused.
        """
        label = target.label
        if op == "ILIKE":
            # No declaration allows it: the enclave has no case folding for any column.
            raise NotSupportedError(
                f"{label}: `ILIKE` over an encrypted column is not supported in the enclave yet; "
                "LIKE (case-sensitive) is"
            )
        if node is None or op not in _DETERMINISTIC_ENCLAVE_OPS:
            # Aggregates and the rest: another declaration of the column would allow them.
            raise ProgrammingError(
                f"{label} is DETERMINISTIC; `{op}` needs RANDOMIZED encryption with an "
                "enclave-enabled column master key (ENCLAVE_COMPUTATIONS); on a DETERMINISTIC "
                "column the enclave runs only ORDER BY, <, <=, >, >=, BETWEEN, LIKE, MIN, MAX, SUM "
                "and AVG"
            )
        if enabled and self.enclave_available:
            node.meta[ENCLAVE] = target
            return
        where = "ORDER BY" if op == "ORDER BY" else f"`{op}`"
        if enabled:
            raise ProgrammingError(
                f"{label} is DETERMINISTIC; {where} over it runs in the enclave and needs a "
                "connection with attestation_protocol set"
            )
        raise ProgrammingError(
            f"{label} is DETERMINISTIC; {where} over it runs in the enclave and needs an "
            "enclave-enabled column master key (ENCLAVE_COMPUTATIONS) for its column "
            "encryption key and a connection with attestation_protocol set"
        )

    def equality(self, target: EncryptionTarget, op: str, node: exp.Expr | None = None) -> None:
        """Equality work runs on deterministic ciphertext natively."""
        if target.encryption_type == "RANDOMIZED":
            self.needs_enclave(target, op, node)
        else:
            self.native.append((op, target.label))

    # ---- walk ---------------------------------------------------------------------------

    def run(self, tree: exp.Expr) -> None:
        for node in tree.walk():
            if isinstance(node, exp.Column) and node.meta.get(TARGET) is not None:
                if not node.meta.get(ASSIGNED):
                    self.column_context(node, node.meta[TARGET])
            elif isinstance(node, exp.Subquery) and _is_scalar(node):
                # A scalar subquery yielding ciphertext is an encrypted value like a column.
                target, _ = origin(node)
                if target is not None:
                    self.column_context(node, target)
            elif isinstance(node, (*_EQUALITY_OPS, *_ORDER_OPS)):
                if not _is_assignment(node):
                    self.comparison(node)
            elif isinstance(node, (exp.TableColumn, exp.Columns, exp.Star, exp.Pivot)):
                self.implicit_columns(node)
            elif isinstance(node, exp.SetOperation):
                self.set_operation(node)
            elif isinstance(node, exp.Insert):
                self.insert(node)
            elif isinstance(node, exp.Update):
                self.update(node)
            elif isinstance(node, exp.Select) and node.args.get("distinct"):
                for projection in node.selects:
                    target, _ = origin(projection)
                    if target is not None:
                        self.equality(target, "DISTINCT", projection.unalias())
            if isinstance(node, exp.Select):
                self.implicit_keys(node)

    def implicit_keys(self, select: exp.Select) -> None:
        """ORDER BY ALL and GROUP BY ALL name no column, so no column's check sees them: over
        an encrypted output column DuckDB would sort (or group randomized) ciphertext."""
        order = select.args.get("order")
        group = select.args.get("group")
        sorts_all = order is not None and any(
            isinstance(o.this, exp.Var) and o.this.name.upper() == "ALL" for o in order.expressions
        )
        groups_all = group is not None and bool(group.args.get("all"))
        if not (sorts_all or groups_all):
            return
        for projection in select.selects:
            target, _ = origin(projection)
            if target is None and sorts_all:
                # An enclave aggregate's output is ciphertext too (COUNT's is not).
                target = next(
                    (
                        c.meta[TARGET]
                        for c in projection.find_all(exp.Column)
                        if c.meta.get(TARGET) is not None
                        and not isinstance(c.find_ancestor(exp.Count, exp.Select), exp.Count)
                    ),
                    None,
                )
            if target is None:
                continue
            if sorts_all:
                raise NotSupportedError(
                    f"{target.label} is encrypted; ORDER BY ALL cannot sort it: name the sort "
                    "keys instead"
                )
            if target.encryption_type == "RANDOMIZED" and projection.find(exp.AggFunc) is None:
                raise NotSupportedError(
                    f"{target.label} is RANDOMIZED; GROUP BY ALL cannot group it: name the "
                    "GROUP BY keys instead"
                )

    def implicit_columns(self, node: exp.Expr) -> None:
        """Constructs that reach columns without naming them cannot be checked: refuse them.

        qualify_columns has already expanded every ``*`` it could, so a star left over (other
        than COUNT(*)) comes from a source whose columns are unknown.
        """
        if isinstance(node, exp.Star) and isinstance(node.parent, exp.Count):
            return
        if isinstance(node, exp.TableColumn):
            construct = f"the whole-row reference {node.name}"
        elif isinstance(node, exp.Columns):
            construct = "COLUMNS(...)"
        elif isinstance(node, exp.Pivot):
            construct = "PIVOT/UNPIVOT"
        else:
            construct = "a * that cannot be expanded"
        raise NotSupportedError(
            f"{construct} cannot be checked on a statement over tables with encrypted columns; "
            "name the columns instead"
        )

    def column_context(self, column: exp.Expr, target: EncryptionTarget) -> None:
        child: exp.Expr = column
        parent = column.parent
        while isinstance(parent, exp.Paren):
            child, parent = parent, parent.parent
        if parent is None:
            return
        if isinstance(parent, exp.Alias):
            child, parent = parent, parent.parent
            if parent is None:
                return
        if isinstance(parent, exp.Select) and child.arg_key == "expressions":
            return  # selected as ciphertext; the client decrypts it
        if isinstance(parent, exp.Is) and isinstance(parent.expression, exp.Null):
            return  # IS [NOT] NULL: the host sees NULLs anyway
        if isinstance(parent, (*_EQUALITY_OPS, *_ORDER_OPS)) and not isinstance(child, exp.Alias):
            return  # comparison() checks the operator as a whole
        if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values):
            return  # a VALUES row; insert() checks it against its target column
        if isinstance(parent, exp.Group):
            self.equality(target, "GROUP BY", column)
            return
        if isinstance(parent, exp.Distinct) and isinstance(parent.parent, exp.Count):
            self._not_windowed(parent.parent, target)
            self.equality(target, "COUNT(DISTINCT)", parent.parent)
            return
        if isinstance(parent, exp.Count):
            self._not_windowed(parent, target)
            return  # COUNT only sees which cells are NULL, which the host knows anyway
        if isinstance(parent, exp.Ordered):
            self.needs_enclave(target, "ORDER BY", parent)
            return
        if isinstance(parent, _EXPRESSION_NODES):
            # Arithmetic inside SUM or AVG runs in the enclave as one expression program
            # (rewrite_enclave_aggregates compiles it); anywhere else it is refused below.
            aggregate = _enclosing_sum_or_avg(parent)
            if aggregate is not None:
                self._not_windowed(aggregate, target)
                self.needs_enclave(target, _ORDER_AGGREGATES[type(aggregate)], aggregate)
                return
        for cls, name in _ORDER_AGGREGATES.items():
            if isinstance(parent, cls):
                self._not_windowed(parent, target)
                self.needs_enclave(target, name, parent)
                return
        if isinstance(parent, exp.Where | exp.Having | exp.Join):
            raise NotSupportedError(
                f"{target.label} is encrypted and cannot be used as a condition by itself; "
                "compare it with a value"
            )
        raise NotSupportedError(
            f"{target.label} is encrypted; {_construct(parent)} over an encrypted column "
            "cannot run on ciphertext (only selecting, equality, IS NULL, COUNT, GROUP BY "
            "and DISTINCT can, or the enclave operations)"
        )

    def _not_windowed(self, aggregate: exp.Expr, target: EncryptionTarget) -> None:
        parent = aggregate.parent
        if isinstance(parent, exp.Window) or isinstance(aggregate.parent, exp.Filter):
            raise NotSupportedError(
                f"{target.label} is encrypted; a window function or FILTER over an encrypted "
                "column cannot run"
            )

    def comparison(self, node: exp.Expr) -> None:
        if isinstance(node, exp.In):
            op = "NOT IN" if isinstance(node.parent, exp.Not) else "IN"
            others = list(node.expressions)
            query = node.args.get("query")
            if query is not None:
                others.append(query)
            if node.args.get("unnest") is not None or node.args.get("field") is not None:
                others.append(node.args.get("unnest") or node.args.get("field"))
            operands = [node.this, *others]
        elif isinstance(node, exp.Between):
            op = "BETWEEN"
            operands = [node.this, node.args["low"], node.args["high"]]
        else:
            op = _EQUALITY_OPS.get(type(node)) or _ORDER_OPS[type(node)]
            operands = [node.this, node.expression]
            escape = node.args.get("escape")
            if escape is not None:
                operands.append(escape)
        targets = [origin(o)[0] for o in operands]
        encrypted = [t for t in targets if t is not None]
        if not encrypted:
            return
        first = encrypted[0]
        for operand, target in zip(operands, targets, strict=True):
            if target is not None:
                if not target.same_key(first):
                    raise ProgrammingError(
                        f"`{op}` compares {first.label} with {target.label}, which are encrypted "
                        "under different keys, encryption types or declared types; declare "
                        "both with the same column encryption key, type and encryption type"
                    )
                continue
            is_literal, _ = literal_value(operand)
            if isinstance(operand, exp.Placeholder) or is_literal:
                operand.meta[BIND] = first
            elif isinstance(operand, exp.Null):
                pass
            else:
                raise ProgrammingError(
                    f"`{op}` compares the encrypted column {first.label} with a plaintext "
                    f"expression ({_describe(operand)}); ciphertext is never compared with "
                    "plaintext: compare it with a literal or a ? parameter, or with a column "
                    "encrypted under the same key"
                )
        if type(node) in _ORDER_OPS:
            self.needs_enclave(first, op, node)
        else:
            self.equality(first, op, node)

    def set_operation(self, node: exp.SetOperation) -> None:
        op = type(node).__name__.upper()
        for a, b in zip(node.this.selects, node.expression.selects, strict=False):
            ta, tb = origin(a)[0], origin(b)[0]
            if ta is None and tb is None:
                continue
            if ta is None or tb is None:
                plain = a if ta is None else b
                enc = ta or tb
                assert enc is not None
                if not isinstance(plain.unalias(), exp.Null):
                    raise ProgrammingError(
                        f"{op} combines the encrypted column {enc.label} with a plaintext "
                        "column; ciphertext and plaintext never mix"
                    )
            elif not ta.same_key(tb):
                raise ProgrammingError(
                    f"{op} combines {ta.label} and {tb.label}, which are encrypted under "
                    "different keys, encryption types or declared types"
                )
            if node.args.get("distinct") or not isinstance(node, exp.Union):
                # INTERSECT ALL and EXCEPT ALL compare rows too; only UNION ALL does not.
                enc_target = ta or tb
                assert enc_target is not None
                self.equality(enc_target, op, node)

    # ---- writes -------------------------------------------------------------------------

    def write_value(self, target: EncryptionTarget | None, value: exp.Expr, what: str) -> None:
        """Check one value written into a column; mark it for encryption when needed."""
        value = value.unalias() if isinstance(value, exp.Alias) else value
        source, _ = origin(value)
        if target is None:
            if source is not None:
                raise ProgrammingError(
                    f"{what} would copy ciphertext of {source.label} into a plaintext column; "
                    "ciphertext and plaintext never mix"
                )
            return
        if source is not None:
            if not source.same_key(target):
                raise ProgrammingError(
                    f"{what} would copy {source.label} into {target.label}, which is encrypted "
                    "under a different key, encryption type or declared type; declare both "
                    "alike to copy ciphertext"
                )
            return
        if isinstance(value, exp.Null):
            return  # NULL is stored as NULL (documented leakage)
        if isinstance(value, exp.Placeholder) or literal_value(value)[0]:
            value.meta[BIND] = target
            return
        raise ProgrammingError(
            f"{what} would write a plaintext expression ({_construct(value)}) into the "
            f"encrypted column {target.label}; pass the value as a literal or a ? parameter"
        )

    def insert(self, node: exp.Insert) -> None:
        destination = node.this
        table = destination.this if isinstance(destination, exp.Schema) else destination
        if not isinstance(table, exp.Table):
            return
        known = self.catalog.has_table(table.name)
        info = self.catalog.table(table.name) if known else None
        if info is not None and info.encrypted:
            for key in ("returning", "conflict"):
                if node.args.get(key):
                    raise NotSupportedError(
                        f"{info.name} has encrypted columns; INSERT with "
                        f"{key.upper().replace('CONFLICT', 'ON CONFLICT')} is not supported"
                    )
            if node.args.get("by_name"):
                raise NotSupportedError(
                    f"{info.name} has encrypted columns; INSERT ... BY NAME is not supported"
                )
        if isinstance(destination, exp.Schema) and destination.expressions:
            names = [c.name for c in destination.expressions]
        elif info is not None:
            names = [c.name for c in info.columns]
        else:
            names = []
        targets: list[EncryptionTarget | None] = [
            base_origin(self.catalog, info.name, n)[0] if info is not None else None for n in names
        ]
        source = node.expression
        what = f"INSERT INTO {table.name}"
        if isinstance(source, exp.Values):
            rows = [
                list(row.expressions) if isinstance(row, exp.Tuple) else [row]
                for row in source.expressions
            ]
        elif isinstance(source, exp.Query):
            rows = [list(source.selects)]
        else:
            return
        for row in rows:
            if targets and len(row) != len(targets):
                raise ProgrammingError(
                    f"{what} names {len(targets)} column(s) but a row has {len(row)} value(s)"
                )
            for i, value in enumerate(row):
                target = targets[i] if targets else None
                if isinstance(source, exp.SetOperation) and target is not None:
                    # Only a whole-branch ciphertext copy is safe through a set operation.
                    if origin(value)[0] is None:
                        raise ProgrammingError(
                            f"{what}: every branch must supply {target.label} from a column "
                            "encrypted under the same key"
                        )
                self.write_value(target, value, what)

    def update(self, node: exp.Update) -> None:
        what = f"UPDATE {node.this.sql('duckdb')}" if node.this is not None else "UPDATE"
        if node.args.get("returning"):
            for column in node.args["returning"].find_all(exp.Column):
                if column.meta.get(TARGET) is not None:
                    raise NotSupportedError(
                        f"{column.meta[TARGET].label} is encrypted; RETURNING it is not supported"
                    )
        for assignment in node.expressions:
            if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
                continue
            column = assignment.this
            column.meta[ASSIGNED] = True
            self.write_value(column.meta.get(TARGET), assignment.expression, what)


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Column):
        return f"the column {node.sql('duckdb')}"
    return _construct(node)


# The arithmetic an enclave expression aggregate evaluates (H1: + - * and unary minus).
_EXPRESSION_NODES = (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Paren)


def _enclosing_sum_or_avg(node: exp.Expr) -> exp.Expr | None:
    """The SUM or AVG whose argument is the arithmetic that ``node`` belongs to, if any."""
    while isinstance(node, _EXPRESSION_NODES):
        if node.parent is None:
            return None
        node = node.parent
    return node if isinstance(node, (exp.Sum, exp.Avg)) else None


def _is_scalar(subquery: exp.Subquery) -> bool:
    """False for derived tables and for the subquery of ``x IN (SELECT ...)``."""
    return not isinstance(subquery.parent, (exp.From, exp.Join)) and subquery.arg_key != "query"


def _is_assignment(node: exp.Expr) -> bool:
    return (
        isinstance(node, exp.EQ)
        and isinstance(node.parent, exp.Update)
        and (node.arg_key == "expressions")
    )


def classify_encrypted_operations(
    expression: exp.Expr, catalog: CatalogSnapshot, *, enclave_available: bool
) -> exp.Expr:
    """Check every operation on encrypted columns and mark values to encrypt (a new tree).

    Raises ProgrammingError when another column declaration would allow the statement and
    NotSupportedError when none would; the message names the column and the operation.

    >>> from sqlglot import parse_one
    >>> from engine.sql.catalog import (
    ...     ColumnEncryptionKey, ColumnEncryptionKeyValue, ColumnInfo, ColumnMasterKey,
    ...     Encryption, TableInfo)
    >>> from engine.sql.resolve_columns import resolve_columns
    >>> cmk = ColumnMasterKey("cmk1", "PEM_FILE", "/k.pem")
    >>> cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),))
    >>> t = TableInfo("t", (ColumnInfo("s", "INT", Encryption("cek1", "RANDOMIZED")),))
    >>> snap = CatalogSnapshot(1, (cmk,), (cek,), (t,))
    >>> tree = resolve_columns(parse_one("SELECT t.s FROM t AS t WHERE t.s < 3"), snap)
    >>> classify_encrypted_operations(tree, snap, enclave_available=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: t.s is RANDOMIZED; `<` needs an enclave-enabled ...
    """
    expression = expression.copy()
    classifier = _Classifier(catalog, enclave_available)
    classifier.run(expression)
    expression.meta[NATIVE_OPERATIONS] = tuple(dict.fromkeys(classifier.native))
    return expression

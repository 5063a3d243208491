"""Compile the arithmetic inside SUM or AVG into the enclave's expression form (postfix code).

It accepts + - * and unary minus over encrypted columns, plaintext numeric columns and numeric
literals, types each step as DuckDB does (exact DECIMAL scales, DOUBLE when a DOUBLE takes
part) and refuses anything else with NotSupportedError naming the construct. It is pure: no
I/O, no keys, and no key ids (the client turns the result into program bytes).
"""

from __future__ import annotations

from sqlglot import exp

from engine.errors import NotSupportedError
from engine.sql.plan import AggregateExpression, ExpressionSlot
from engine.sql.resolve_columns import origin
from engine.types import NormalizationForm, parse_sql_type

__all__ = ["compile_aggregate_expression", "MAX_SLOTS", "MAX_SCALE"]

# Limits of the enclave's program format (enclave.h, section 5b).
MAX_SLOTS = 16
MAX_SCALE = 38
_MAX_CODE_BYTES = 256
_CODE_BYTES = {"slot": 2, "exact": 19, "float": 9, "add": 1, "sub": 1, "mul": 1, "neg": 1}
_BINARY = {exp.Add: "add", exp.Sub: "sub", exp.Mul: "mul"}
_REFUSED = {
    exp.Div: "division (/)",
    exp.IntDiv: "integer division (//)",
    exp.Mod: "modulo (%)",
    exp.Cast: "CAST",
    exp.TryCast: "TRY_CAST",
    exp.Case: "CASE",
    exp.If: "CASE",
    exp.Coalesce: "COALESCE",
    exp.Placeholder: "a ? parameter",
}


def _refuse(what: str) -> NotSupportedError:
    return NotSupportedError(
        f"{what} inside SUM or AVG over an encrypted column cannot run in the enclave; only "
        "+, - and * of numeric columns and numeric literals can (compute the rest outside "
        "the aggregate, or over plaintext columns)"
    )


class _Compiler:
    def __init__(self) -> None:
        self.slots: list[ExpressionSlot] = []
        self.columns: list[exp.Expr] = []
        self.keys: dict[str, int] = {}
        self.code: list[tuple[object, ...]] = []
        self.integer = True

    def compile(self, node: exp.Expr) -> tuple[bool, int]:
        """Emit node's code; returns (is_float, scale) of its value."""
        if isinstance(node, exp.Paren):
            return self.compile(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal) and node.is_number:
            return self.literal(str(node.this))
        if isinstance(node, exp.Neg):
            result = self.compile(node.this)
            self.code.append(("neg",))
            return result
        for cls, name in _BINARY.items():
            if isinstance(node, cls):
                left_float, left_scale = self.compile(node.this)
                right_float, right_scale = self.compile(node.expression)
                self.code.append((name,))
                if left_float or right_float:
                    return True, 0
                scale = left_scale + right_scale if name == "mul" else max(left_scale, right_scale)
                if scale > MAX_SCALE:
                    raise NotSupportedError(
                        f"a product inside SUM or AVG needs scale {scale}, beyond DECIMAL's "
                        f"{MAX_SCALE} (DuckDB refuses it too); cast an operand to a smaller scale "
                        "before storing it, or use DOUBLE columns"
                    )
                return False, scale
        for refused, what in _REFUSED.items():
            if isinstance(node, refused):
                raise _refuse(what)
        if isinstance(node, exp.Func):
            raise _refuse(f"the function {node.sql_name()}")
        raise _refuse(f"the expression {type(node).__name__.upper()}")

    def column(self, node: exp.Column) -> tuple[bool, int]:
        target, declared = origin(node)
        label = target.label if target is not None else node.sql("duckdb")
        if declared is None:
            raise _refuse(f"the column {label}, whose type is not known here,")
        sql_type = parse_sql_type(declared)
        form = sql_type.form
        if sql_type.duckdb_type == "BOOLEAN" or form not in (
            NormalizationForm.INT64,
            NormalizationForm.DECIMAL,
            NormalizationForm.FLOAT64,
        ):
            # REAL/FLOAT4 is left out on purpose: DuckDB computes it in single precision.
            raise _refuse(f"the {declared} column {label}")
        scale = (sql_type.scale or 0) if form is NormalizationForm.DECIMAL else 0
        if form is not NormalizationForm.INT64:
            self.integer = False
        key = node.sql("duckdb").casefold()
        index = self.keys.get(key)
        if index is None:
            index = len(self.slots)
            if index == MAX_SLOTS:
                raise _refuse(f"a {MAX_SLOTS + 1}th distinct column")
            self.keys[key] = index
            self.slots.append(ExpressionSlot(target, form.name, scale))
            self.columns.append(node)
        self.code.append(("slot", index))
        return form is NormalizationForm.FLOAT64, scale

    def literal(self, text: str) -> tuple[bool, int]:
        if "e" in text.lower():
            self.code.append(("float", float(text)))  # DuckDB reads 1e3 as DOUBLE
            return True, 0
        whole, _, fraction = text.partition(".")
        unscaled = int((whole or "0") + fraction)
        if unscaled >= 10**38 or len(fraction) > MAX_SCALE:
            raise _refuse("a numeric literal of more than 38 digits")
        if fraction:
            self.integer = False  # DuckDB types 1.5 as DECIMAL(2,1)
        self.code.append(("exact", len(fraction), unscaled))
        return False, len(fraction)


def compile_aggregate_expression(node: exp.Expr) -> tuple[AggregateExpression, list[exp.Expr]]:
    """The enclave expression of SUM's or AVG's argument ``node``, and the column of each slot
    in slot order (what the host must collect per row).

    >>> from sqlglot import parse_one
    >>> expression, columns = compile_aggregate_expression(parse_one("x * (1 - 0.05)"))
    Traceback (most recent call last):
    ...
    engine.errors.NotSupportedError: the column x, whose type is not known here, inside SUM or \
AVG over an encrypted column cannot run in the enclave; only +, - and * of numeric columns and \
numeric literals can (compute the rest outside the aggregate, or over plaintext columns)
    >>> from engine.sql.plan import EncryptionTarget
    >>> from engine.sql.resolve_columns import DECLARED, TARGET
    >>> tree = parse_one("x * (1 - 0.05)")
    >>> x = tree.find(exp.Column)
    >>> x.meta[DECLARED] = "DECIMAL(15,2)"
    >>> x.meta[TARGET] = EncryptionTarget("t", "x", "cek1", "RANDOMIZED", "DECIMAL(15,2)")
    >>> expression, columns = compile_aggregate_expression(tree)
    >>> expression.code
    (('slot', 0), ('exact', 0, 1), ('exact', 2, 5), ('sub',), ('mul',))
    >>> expression.scale, expression.is_float, [c.sql() for c in columns]
    (4, False, ['x'])
    """
    compiler = _Compiler()
    is_float, scale = compiler.compile(node)
    if not any(slot.target is not None for slot in compiler.slots):
        raise _refuse("an expression without an encrypted column")
    size = sum(_CODE_BYTES[str(step[0])] for step in compiler.code)
    if size > _MAX_CODE_BYTES:
        raise _refuse("an expression this long")
    expression = AggregateExpression(
        tuple(compiler.slots),
        tuple(compiler.code),
        is_float,
        0 if is_float else scale,
        compiler.integer and not is_float,
    )
    return expression, compiler.columns

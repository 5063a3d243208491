"""Rewrite rule: turn literals aimed at encrypted columns into ``?`` placeholders.

SQL Server refuses such literals; we lift them out so the client can encrypt them, and keep
the user's own ``?`` parameters in order beside them. It must not decide which literals are
aimed at encrypted columns (classify_encrypted_operations marks them) and must not encrypt.
"""

from __future__ import annotations

import re
from typing import Any

from sqlglot import exp

from engine.errors import InternalError, ProgrammingError
from engine.sql.classify_encrypted_operations import BIND, literal_value
from engine.sql.dialect import EnclaveDuckDB, EnclaveDuckDBGenerator
from engine.sql.plan import ParameterSpec

__all__ = ["number_user_placeholders", "parameterize_literals", "render_with_parameters"]

USER_INDEX = "ae_user_index"
LITERAL = "ae_literal"
# Placeholder meta set by rewrite_enclave_predicates: (role, EnclaveOperation), see EnclaveRole.
ENCLAVE_ROLE = "ae_enclave_role"
# Placeholder meta set by rewrite_inexact_comparisons: the value is compared, never stored.
COMPARED = "ae_compared"
# Placeholder meta set by the tag rules (rewrite_tag_lookups, rewrite_tag_writes): the value is
# the tag of the cell the client makes for it, not the cell.
TAG = "ae_tag"

_DIALECT = EnclaveDuckDB()
# A marker no SQL text contains (NUL is not valid in DuckDB SQL text outside odd literals,
# and the marker count is checked, so a collision fails loudly instead of misnumbering).
_MARKER = re.compile("\x00P(\\d+)\x00")


class _MarkingGenerator(EnclaveDuckDBGenerator):
    """Writes each placeholder as a numbered marker, so text order can be read back."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marked: list[dict[str, Any]] = []

    def placeholder_sql(self, expression: exp.Placeholder) -> str:
        self.marked.append(dict(expression.meta))
        return f"\x00P{len(self.marked) - 1}\x00"


def _render(expression: exp.Expr) -> tuple[str, list[dict[str, Any]]]:
    generator = _MarkingGenerator(dialect=_DIALECT)
    text = generator.generate(expression, copy=True)
    order = [int(m.group(1)) for m in _MARKER.finditer(text)]
    if sorted(order) != list(range(len(generator.marked))):
        raise InternalError("placeholder markers were lost while generating SQL")
    return _MARKER.sub("?", text), [generator.marked[i] for i in order]


def number_user_placeholders(expression: exp.Expr) -> tuple[exp.Expr, int]:
    """Tag each ``?`` with its 0-based position in the text; returns a new tree and the count.

    Numbered or named parameters ($1, $name) are refused: the module's paramstyle is qmark.

    >>> from sqlglot import parse_one
    >>> tree, count = number_user_placeholders(parse_one("SELECT ? WHERE ? = 1", read="duckdb"))
    >>> count, [p.meta["ae_user_index"] for p in tree.find_all(exp.Placeholder)]
    (2, [0, 1])
    """
    expression = expression.copy()
    placeholders = list(expression.find_all(exp.Placeholder))
    for number, placeholder in enumerate(placeholders):
        if placeholder.this is not None:
            raise ProgrammingError(
                "numbered or named parameters ($1, $name) are not supported; use ? markers"
            )
        placeholder.meta["ae_probe"] = number
    _, order = _render(expression)
    for index, meta in enumerate(order):
        placeholders[meta["ae_probe"]].meta[USER_INDEX] = index
    for placeholder in placeholders:
        del placeholder.meta["ae_probe"]
    return expression, len(placeholders)


def parameterize_literals(expression: exp.Expr) -> exp.Expr:
    """Replace every literal marked for encryption by a ``?`` that remembers the value.

    >>> from sqlglot import parse_one
    >>> tree = parse_one("SELECT 1 WHERE 'x' = 'y'")
    >>> tree.find(exp.EQ).expression.meta["ae_bind"] = "target"
    >>> parameterize_literals(tree).sql()
    "SELECT 1 WHERE 'x' = ?"
    """
    expression = expression.copy()
    for node in list(
        expression.find_all(
            exp.Literal, exp.National, exp.Boolean, exp.Cast, exp.Neg, exp.HexString
        )
    ):
        target = node.meta.get(BIND)
        if target is None:
            continue
        is_literal, value = literal_value(node)
        if not is_literal:
            continue
        placeholder = exp.Placeholder()
        placeholder.meta[BIND] = target
        placeholder.meta[LITERAL] = value
        node.replace(placeholder)
    return expression


def render_with_parameters(expression: exp.Expr) -> tuple[str, tuple[ParameterSpec, ...]]:
    """DuckDB SQL text and one ParameterSpec per ``?`` in text order.

    >>> from sqlglot import parse_one
    >>> tree, _ = number_user_placeholders(parse_one("SELECT ?", read="duckdb"))
    >>> render_with_parameters(tree)
    ('SELECT ?', (ParameterSpec(source=('user', 0), target=None),))
    """
    text, order = _render(expression)
    specs: list[ParameterSpec] = []
    for meta in order:
        target = meta.get(BIND)
        if ENCLAVE_ROLE in meta:
            specs.append(ParameterSpec(meta[ENCLAVE_ROLE], None))
        elif LITERAL in meta:
            tag = bool(meta.get(TAG))
            specs.append(ParameterSpec(("literal", meta[LITERAL]), target, tag=tag))
        elif USER_INDEX in meta:
            compared = bool(meta.get(COMPARED))
            tag = bool(meta.get(TAG))
            specs.append(ParameterSpec(("user", meta[USER_INDEX]), target, compared, tag))
        else:
            raise InternalError("a ? placeholder lost track of where its value comes from")
    return text, tuple(specs)

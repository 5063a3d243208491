"""Rewrite rule: a lower and an upper bound on one enclave column in one AND chain become BETWEEN.

``c >= 10 AND ... AND c < 20`` decrypts ``c`` once per row for the first bound and again for
every row it let through (Q6's ``l_shipdate`` range: about 1.7 decrypts a row). BETWEEN tests
both bounds on one decrypt, and a strict bound becomes a NOT-equal test that runs only on the
rows inside the range, after the chain's other conjuncts: ``c BETWEEN 10 AND 20 AND … AND
c <> 20``. That is the same predicate for
every value of a total order and for NULL, so the answer cannot change. The rule only
reorders conjuncts of one AND chain, and only for literal bounds on an encrypted column
whose key allows enclave computations. It must run after resolve_columns, and before
literals are lifted. It must not touch ``?`` bounds, because a placeholder cannot be
repeated.
"""

from __future__ import annotations

from sqlglot import exp

from engine.sql.catalog import CatalogSnapshot
from engine.sql.classify_encrypted_operations import literal_value
from engine.sql.resolve_columns import TARGET

__all__ = ["rewrite_enclave_ranges"]

# operator class -> (bound side when the column is on the left, strict)
_BOUNDS: dict[type[exp.Expr], tuple[str, bool]] = {
    exp.GTE: ("lower", False),
    exp.GT: ("lower", True),
    exp.LTE: ("upper", False),
    exp.LT: ("upper", True),
}
_FLIP = {"lower": "upper", "upper": "lower"}


def rewrite_enclave_ranges(expression: exp.Expr, catalog: CatalogSnapshot) -> exp.Expr:
    """Merge literal lower and upper bounds of one enclave column in each AND chain.

    >>> from sqlglot import parse_one
    >>> from engine.sql.plan import EncryptionTarget
    >>> class Catalog:
    ...     def enclave_enabled(self, cek_name):
    ...         return True
    >>> tree = parse_one("SELECT 1 FROM t WHERE c >= 10 AND p = 1 AND 20 > c")
    >>> for column in tree.find_all(exp.Column):
    ...     if column.name == "c":
    ...         column.meta[TARGET] = EncryptionTarget("t", "c", "k", "RANDOMIZED", "INTEGER")
    >>> rewrite_enclave_ranges(tree, Catalog()).sql("duckdb")
    'SELECT 1 FROM t WHERE c BETWEEN 10 AND 20 AND p = 1 AND c <> 20'
    """
    for chain in list(expression.find_all(exp.And)):
        # Skip the inner links of a longer chain, and chains an earlier merge replaced.
        if isinstance(chain.parent, exp.And) or chain.root() is not expression.root():
            continue
        _merge_chain(chain, catalog)
    return expression


def _bound(node: exp.Expr, catalog: CatalogSnapshot) -> tuple[str, str, bool, exp.Expr] | None:
    """(column key, "lower"/"upper", strict, literal) when ``node`` bounds an enclave column."""
    kind = _BOUNDS.get(type(node))
    if kind is None:
        return None
    side, strict = kind
    column, other = node.this, node.expression
    if not isinstance(column, exp.Column):
        column, other, side = other, column, _FLIP[side]
    if not isinstance(column, exp.Column) or isinstance(other, exp.Column):
        return None
    target = column.meta.get(TARGET)
    if target is None or not catalog.enclave_enabled(target.cek_name):
        return None
    if not literal_value(other)[0]:
        return None
    return f"{target.table}.{target.column}|{column.sql()}", side, strict, other


def _merge_chain(chain: exp.And, catalog: CatalogSnapshot) -> None:
    conjuncts = list(chain.flatten())
    first: dict[tuple[str, str], int] = {}
    bounds: dict[int, tuple[str, str, bool, exp.Expr]] = {}
    for index, conjunct in enumerate(conjuncts):
        bound = _bound(conjunct, catalog)
        if bound is not None and (bound[0], bound[1]) not in first:
            first[(bound[0], bound[1])] = index
            bounds[index] = bound
    merged: dict[int, exp.Expr] = {}
    # The NOT-equal tests go last: they read cells the BETWEEN already verified, so the rows
    # the other conjuncts rule out need not be decrypted for them at all.
    strict_tests: list[exp.Expr] = []
    dropped: set[int] = set()
    for (column, side), index in first.items():
        if side != "lower" or (column, "upper") not in first:
            continue
        upper_index = first[(column, "upper")]
        _, _, low_strict, low = bounds[index]
        _, _, high_strict, high = bounds[upper_index]
        node = conjuncts[index]
        subject = node.this if isinstance(node.this, exp.Column) else node.expression
        for strict, literal in ((low_strict, low), (high_strict, high)):
            if strict:
                strict_tests.append(exp.NEQ(this=subject.copy(), expression=literal.copy()))
        at, other = min(index, upper_index), max(index, upper_index)
        merged[at] = exp.Between(this=subject.copy(), low=low.copy(), high=high.copy())
        dropped.add(other)
    if not merged:
        return
    result: list[exp.Expr] = []
    for index, conjunct in enumerate(conjuncts):
        if index in merged:
            result.append(merged[index])
        elif index not in dropped:
            result.append(conjunct)
    result += strict_tests
    combined = result[0]
    for conjunct in result[1:]:
        combined = exp.And(this=combined, expression=conjunct)
    chain.replace(combined)

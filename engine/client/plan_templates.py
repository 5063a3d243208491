"""Plan templates: the client's cache of plans whose literals were lifted, keyed by the
statement's shape (its text with literals abstracted) so that the same statement with other
literal values is not described again.

A template keeps no plaintext: each lifted literal is replaced by a slot naming the literal
token of the text it came from, and every execution fills the slots from its own text. It
must not parse SQL (it scans tokens) nor describe on its own (the client hands it a describe
function for its checks); a text it cannot scan safely is simply not templated, and a plan it
cannot rebuild exactly is not kept.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["LiteralToken", "PlanTemplates", "scan_literals"]

# A shape that has made this many templates and reused fewer stops making them (see _made).
_VOLATILE_AFTER = 4
# A shape whose plan failed to become a template this many times, and never made one, is no
# longer probed (see _failed).
_UNTEMPLATABLE_AFTER = 2

# One token of SQL text, in the order tried: whitespace, a quoted identifier, a string
# literal, a number, a word (identifier or keyword), and any other single character.
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<quoted>"(?:[^"]|"")*")
      | (?P<string>'(?:[^']|'')*')
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<word>[^\W\d]\w*)
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
# Text the scanner does not model (comments, backslash escapes, dollar quoting and $n
# parameters, unterminated quotes): such statements are described every time, as before.
_UNSAFE = re.compile(r"--|/\*|\\|\$")


@dataclass(frozen=True)
class LiteralToken:
    """A string or number literal of the text: its kind (``"string"``, ``"int"``, ``"dec"``)
    and its text as written (a string with its quotes)."""

    kind: str
    text: str
    negated: bool = False  # a number right after a minus sign: describe lifts -<number>

    def value(self) -> object:
        """The Python value describe gives this literal (classify_encrypted_operations'
        literal_value).

        >>> LiteralToken("string", "'it''s'").value()
        "it's"
        >>> LiteralToken("int", "42", negated=True).value(), LiteralToken("dec", "1.50").value()
        (-42, Decimal('1.50'))
        """
        if self.kind == "string":
            return self.text[1:-1].replace("''", "'")
        number: int | Decimal = int(self.text) if self.kind == "int" else Decimal(self.text)
        return -number if self.negated else number

    def probe(self, salt: int) -> LiteralToken:
        """Another literal of the same kind and sign whose value depends on ``salt``, to see
        which token a lifted value comes from and that a template follows its tokens.

        >>> LiteralToken("string", "'a'").probe(3).text, LiteralToken("dec", ".5").probe(0).text
        ("'~3~a'", '100.5')
        """
        if self.kind == "string":
            return LiteralToken(self.kind, f"'~{salt}~" + self.text[1:], self.negated)
        return LiteralToken(self.kind, f"{salt + 1}00{self.text}", self.negated)


def scan_literals(text: str) -> tuple[str, tuple[LiteralToken, ...]] | None:
    """The text's shape (literals replaced by a marker of their kind) and its literal tokens,
    or None when the text holds something the scanner does not model.

    >>> shape, tokens = scan_literals("SELECT a FROM t1 WHERE s = 'x' AND n > -5")
    >>> shape
    'SELECT a FROM t1 WHERE s = \\x00string AND n > -\\x00int'
    >>> [t.text for t in tokens]
    ["'x'", '5']
    >>> scan_literals("SELECT 0x1F") is None, scan_literals("SELECT 1 -- note") is None
    (True, True)
    """
    if _UNSAFE.search(text):
        return None
    parts: list[str] = []
    tokens: list[LiteralToken] = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:
            return None  # an unterminated quote: the regex skipped text
        position = match.end()
        kind = match.lastgroup
        token = match.group()
        if kind == "string":
            tokens.append(LiteralToken("string", token))
            parts.append("\x00string")
        elif kind == "number":
            following = text[position : position + 1]
            if following and (following.isalnum() or following in "_."):
                return None  # 0x1F, 1_000, 1.2.3: not a plain number
            kind_name = "int" if token.isdigit() else "dec"
            previous = next((p for p in reversed(parts) if not p.isspace()), "")
            tokens.append(LiteralToken(kind_name, token, negated=previous == "-"))
            parts.append("\x00" + kind_name)
        elif token in ("'", '"'):
            return None  # an unterminated quote
        else:
            parts.append(token)
    if position != len(text):
        return None
    return "".join(parts), tuple(tokens)


@dataclass(frozen=True)
class _Slot:
    """Where a lifted literal's value comes from: literal token ``index`` of the text. It
    stands in the template where the plaintext value stood."""

    index: int


def _map_literals(node: Any, replace: Callable[[Any], Any], memo: dict[int, Any]) -> Any:
    """``node`` with the value of every ``("literal", value)`` pair replaced by
    ``replace(value)``, rebuilding only the dataclasses and tuples that hold one."""
    key = id(node)
    if key in memo:
        return memo[key]
    result = node
    if isinstance(node, tuple):
        if len(node) == 2 and node[0] == "literal":
            result = ("literal", replace(node[1]))
        else:
            items = tuple(_map_literals(item, replace, memo) for item in node)
            if any(a is not b for a, b in zip(items, node, strict=True)):
                result = items
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            mapped = _map_literals(value, replace, memo)
            if mapped is not value:
                changes[field.name] = mapped
        if changes:
            result = dataclasses.replace(node, **changes)
    memo[key] = result
    return result


def _strings(node: Any, seen: set[int]) -> list[str]:
    """Every str inside ``node`` (dataclasses and tuples), to look for leftover plaintext."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    if isinstance(node, str):
        return [node]
    if isinstance(node, tuple):
        return [s for item in node for s in _strings(item, seen)]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [s for f in dataclasses.fields(node) for s in _strings(getattr(node, f.name), seen)]
    return []


@dataclass(frozen=True)
class _Template:
    fixed: tuple[tuple[int, str], ...]  # the tokens that were not lifted, which must match
    prepared: Any  # a PreparedStatement whose lifted values are _Slots


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _blank(prepared: Any, tokens: tuple[LiteralToken, ...]) -> tuple[Any | None, set[int]]:
    """``prepared`` with each lifted value replaced by the _Slot of the one token that has
    that value, and the tokens used; None when a value has no such token or several."""
    lifted: set[int] = set()
    failed = False
    by_value: dict[tuple[type, object], list[int]] = {}
    for index, token in enumerate(tokens):
        value = token.value()
        by_value.setdefault((type(value), value), []).append(index)

    def blank(value: object) -> object:
        nonlocal failed
        try:
            matches = by_value.get((type(value), value), [])
        except TypeError:  # an unhashable value: no token has it
            matches = []
        if len(matches) != 1 or not _same(tokens[matches[0]].value(), value):
            failed = True
            return value
        lifted.add(matches[0])
        return _Slot(matches[0])

    template = _map_literals(prepared, blank, {})
    return (None, lifted) if failed else (template, lifted)


def _literals(node: Any) -> list[Any]:
    """The lifted values (or slots) of ``node`` in walk order, each shared object once."""
    found: list[Any] = []
    _map_literals(node, lambda value: found.append(value), {})
    return found


def _fill(template: Any, tokens: tuple[LiteralToken, ...]) -> Any:
    return _map_literals(template, lambda slot: tokens[slot.index].value(), {})


def _render(text: str, tokens: tuple[LiteralToken, ...]) -> str:
    """``text`` with its literal tokens replaced, in order, by ``tokens``."""
    replacements = iter(tokens)
    return _TOKEN.sub(
        lambda m: next(replacements).text if m.lastgroup in ("string", "number") else m.group(),
        text,
    )


class PlanTemplates:
    """An LRU cache of templates per (shape, catalog version, enclave availability).

    >>> from engine.sql.plan import ParameterSpec, Plan
    >>> templates = PlanTemplates()
    >>> def prepared_for(text):  # stands in for describe: lifts the literal 'x' or 'y'
    ...     value = text.split("'")[1]
    ...     return Plan("query", "SELECT ?", (ParameterSpec(("literal", value), None),))
    >>> templates.remember("SELECT 'x'", (1, False), prepared_for("SELECT 'x'"))
    True
    >>> templates.lookup("SELECT 'y'", (1, False)).parameters[0].source
    ('literal', 'y')
    >>> templates.lookup("SELECT 'y'", (2, False)) is None  # another catalog version
    True
    """

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[Any, ...], list[_Template]] = OrderedDict()
        self._lock = threading.Lock()
        # Per shape: templates made and hits. A shape whose plaintext literals change on every
        # run makes a new template each time and never reuses one; past a few, its statements
        # are described once each, as without templates, instead of paying for the probe.
        self._made: dict[tuple[Any, ...], list[int]] = {}
        # Per shape: failed attempts. Some plans never rebuild from a template (a LIMIT whose
        # value sits in the stage-two SQL, say); each attempt costs a second describe (the
        # probe), so after a few a shape is described once per run, as without templates.
        self._failed: dict[tuple[Any, ...], int] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, text: str, context: tuple[Any, ...]) -> Any | None:
        """The prepared statement for ``text`` rebuilt from a template with this text's literal
        values, or None (then describe, and offer the result to ``remember``)."""
        scanned = scan_literals(text)
        if scanned is None:
            return None
        shape, tokens = scanned
        key = (shape, *context)
        with self._lock:
            template = next(
                (
                    t
                    for t in self._entries.get(key, ())
                    if all(tokens[i].text == fixed for i, fixed in t.fixed)
                ),
                None,
            )
            if template is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            self._made.setdefault(key, [0, 0])[1] += 1
        return _fill(template.prepared, tokens)

    def remember(
        self,
        text: str,
        context: tuple[Any, ...],
        prepared: Any,
        describe: Callable[[str], Any] | None = None,
    ) -> bool:
        """Keep a template of ``prepared`` (described from ``text``) and return whether it was
        kept: when each lifted value comes from exactly one literal token (two equal literals
        are told apart by describing the text with distinct values in their place, given
        ``describe``, text to prepared statement), the template rebuilds ``prepared``
        exactly, and the text with other values at the lifted tokens describes to what the
        template rebuilds for it (no value was synthesized, no decision hung on a value)."""
        scanned = scan_literals(text)
        if scanned is None:
            return False
        shape, tokens = scanned
        key = (shape, *context)
        with self._lock:
            made, used = self._made.get(key, (0, 0))
            failed = self._failed.get(key, 0)
        if made >= _VOLATILE_AFTER and used < made:
            return False
        if made == 0 and failed >= _UNTEMPLATABLE_AFTER:
            return False
        kept = self._remember(text, key, tokens, prepared, describe)
        if not kept:
            with self._lock:
                if len(self._failed) > 4 * self._capacity:
                    self._failed.clear()
                self._failed[key] = failed + 1
        return kept

    def _remember(
        self,
        text: str,
        key: tuple[Any, ...],
        tokens: tuple[LiteralToken, ...],
        prepared: Any,
        describe: Callable[[str], Any] | None,
    ) -> bool:
        template, lifted = _blank(prepared, tokens)
        if template is None and describe is not None:
            # Equal literals: describe once more with each literal made distinct.
            distinct = tuple(t.probe(i) for i, t in enumerate(tokens))
            values = [t.value() for t in distinct]
            if len({(type(v), v) for v in values}) == len(values):
                try:
                    probed = _blank(describe(_render(text, distinct)), distinct)[0]
                except Exception:  # the probe is not valid for this statement: do not template
                    return False
                # Same describe, same structure: the probe's slots in walk order are this
                # plan's (its SQL text holds the probe's values of plaintext literals).
                slots = iter(_literals(probed)) if probed is not None else iter(())
                template = _map_literals(prepared, lambda _value: next(slots, None), {})
                lifted = {slot.index for slot in _literals(template) if slot is not None}
                if None in _literals(template) or next(slots, None) is not None:
                    return False
        if template is None or not lifted or _fill(template, tokens) != prepared:
            return False
        # No lifted string may survive anywhere else in the template (say, inside SQL text).
        quoted = [tokens[i].text for i in lifted if tokens[i].kind == "string"]
        if any(q in s for s in _strings(template, set()) for q in quoted):
            return False
        if describe is not None:
            probes = tuple(t.probe(i) if i in lifted else t for i, t in enumerate(tokens))
            try:
                expected = describe(_render(text, probes))
            except Exception:  # the probe is not valid for this statement: do not template
                return False
            if _fill(template, probes) != expected:
                return False
        fixed = tuple((i, t.text) for i, t in enumerate(tokens) if i not in lifted)
        with self._lock:
            self._made.setdefault(key, [0, 0])[0] += 1
            if len(self._made) > 4 * self._capacity:
                self._made.clear()
            entries = self._entries.setdefault(key, [])
            entries.insert(0, _Template(fixed, template))
            del entries[8:]  # one shape with many different fixed literals: keep the newest
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._made.clear()
            self._failed.clear()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

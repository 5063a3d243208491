"""Generates the leakage table of docs/SECURITY.md from the `Leakage:` lines of enclave.h.

`render_table(header_text)` gives one Markdown row per `ee_*` function in header order;
`python -m tests.security.leakage_table` rewrites the marked section (`--check` only compares).
It must never edit outside the markers, nor invent a leakage line: a missing one is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "native" / "include" / "enclave.h"
DOC = ROOT / "docs" / "SECURITY.md"
BEGIN = "<!-- leakage-table:begin -->"
END = "<!-- leakage-table:end -->"

_FUNCTION = re.compile(r"\bee_status\s+(ee_\w+)\s*\(")
_COMMENT = re.compile(r"/\*(.*?)\*/", re.DOTALL)
_SECTION = re.compile(r"/\*\s*-+\s*(\d+)\.\s*(.*?)\s*-*\s*\*/")


@dataclass(frozen=True)
class HeaderFunction:
    """One `ee_*` function of the header, its section and its Leakage text (None when missing)."""

    name: str
    section: str
    leakage: str | None


def _comment_before(header_text: str, position: int) -> str | None:
    """The text of the comment that ends right before `position` (blank space and the
    EE_MUST_CHECK marker may sit between), or None."""
    before = header_text[:position].rstrip()
    if before.endswith("EE_MUST_CHECK"):
        before = before[: -len("EE_MUST_CHECK")].rstrip()
    if not before.endswith("*/"):
        return None
    start = before.rfind("/*")
    return before[start + 2 : -2] if start != -1 else None


def _leakage_of(comment: str) -> str | None:
    lines = [line.strip().lstrip("*").strip() for line in comment.splitlines()]
    text = " ".join(line for line in lines if line)
    found = re.search(r"\bLeakage:\s*(.*)$", text)
    return found.group(1).strip() if found and found.group(1).strip() else None


def header_functions(header_text: str) -> list[HeaderFunction]:
    """Every `ee_*` function declared in the header, in order.

    >>> text = '''/* ---- 1. Keys ---- */
    ... /* Frees a key.
    ...  * Leakage: whether the id named a live key. */
    ... EE_MUST_CHECK ee_status ee_key_free(uint64_t key_id);
    ... /* No leakage line here. */
    ... ee_status ee_other(void);'''
    >>> [(f.name, f.section, f.leakage) for f in header_functions(text)]
    [('ee_key_free', '1. Keys', 'whether the id named a live key.'), ('ee_other', '1. Keys', None)]
    """
    sections = [(m.start(), f"{m.group(1)}. {m.group(2)}") for m in _SECTION.finditer(header_text)]
    functions = []
    for match in _FUNCTION.finditer(header_text):
        line_start = header_text.rfind("\n", 0, match.start()) + 1
        comment = _comment_before(header_text, line_start)
        section = ""
        for start, title in sections:
            if start < match.start():
                section = title
        functions.append(
            HeaderFunction(
                match.group(1), section, _leakage_of(comment) if comment is not None else None
            )
        )
    return functions


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(header_text: str) -> str:
    """The Markdown leakage table; raises ValueError naming any function without a Leakage line.

    >>> print(render_table('''/* ---- 3. Column keys ---- */
    ... /* Wipes a slot.
    ...  * Leakage: whether the id named a live key. */
    ... EE_MUST_CHECK ee_status ee_key_free(uint64_t key_id);'''))
    | function | header section | what the caller learns (its `Leakage:` line) |
    |---|---|---|
    | `ee_key_free` | 3. Column keys | whether the id named a live key. |
    """
    functions = header_functions(header_text)
    missing = [function.name for function in functions if function.leakage is None]
    if missing:
        raise ValueError(
            f"enclave.h functions without a Leakage: line: {', '.join(missing)}; "
            "add one to each comment"
        )
    rows = [
        "| function | header section | what the caller learns (its `Leakage:` line) |",
        "|---|---|---|",
    ]
    for function in functions:
        assert function.leakage is not None
        rows.append(
            f"| `{function.name}` | {_cell(function.section)} | {_cell(function.leakage)} |"
        )
    return "\n".join(rows)


def replace_section(doc_text: str, table: str) -> str:
    """`doc_text` with the lines between the markers replaced by `table`.

    >>> replace_section(f"a\\n{BEGIN}\\nold\\n{END}\\nb", "new").splitlines()[1:4]
    ['<!-- leakage-table:begin -->', 'new', '<!-- leakage-table:end -->']
    """
    if doc_text.count(BEGIN) != 1 or doc_text.count(END) != 1:
        raise ValueError(f"the document needs exactly one {BEGIN} and one {END}")
    head, rest = doc_text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def committed_section(doc_text: str) -> str:
    """The text between the markers, without the newlines next to them."""
    if doc_text.count(BEGIN) != 1 or doc_text.count(END) != 1:
        raise ValueError(f"the document needs exactly one {BEGIN} and one {END}")
    return doc_text.split(BEGIN)[1].split(END)[0].strip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.security.leakage_table",
        description="Regenerate the leakage table of docs/SECURITY.md from enclave.h.",
    )
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    options = parser.parse_args(argv)
    table = render_table(HEADER.read_text(encoding="utf-8"))
    doc_text = DOC.read_text(encoding="utf-8")
    if options.check:
        if committed_section(doc_text) != table:
            print(f"{DOC} is stale; run python -m tests.security.leakage_table", file=sys.stderr)
            return 1
        return 0
    updated = replace_section(doc_text, table)
    if updated != doc_text:
        DOC.write_text(updated, encoding="utf-8")
        print(f"rewrote the leakage table in {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

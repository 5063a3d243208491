"""docs/repl.md stays true: every documented dot command and option exists, and every one that
exists is documented."""

from __future__ import annotations

import re
from pathlib import Path

from engine.repl.commands import COMMANDS
from engine.repl.options import build_parser

DOC = (Path(__file__).resolve().parents[2] / "docs" / "repl.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = DOC.index(f"## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def test_documented_dot_commands_are_exactly_the_implemented_ones() -> None:
    documented = re.findall(r"^\| `\.(\w+)", _section("Dot commands"), re.MULTILINE)
    assert sorted(documented) == sorted(COMMANDS)


def test_documented_usage_matches_each_command() -> None:
    table = _section("Dot commands")
    for command in COMMANDS.values():
        usage = command.usage.replace("|", "\\|")  # escaped as it must be inside a table cell
        assert f"| `{usage}` |" in table, command.usage


def test_documented_options_are_exactly_the_implemented_ones() -> None:
    documented = set(re.findall(r"`(--[a-z-]+)", _section("Options")))
    implemented = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert documented == implemented

"""``engine.cli.progress``: a bar only on a terminal, never under --json/--quiet, none without rich."""
from __future__ import annotations

import io
import sys

import pytest

from engine.cli import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_only_on_a_terminal_without_json_or_quiet() -> None:
    assert progress.wanted(as_json=False, quiet=False, stream=_Terminal())
    assert not progress.wanted(as_json=True, quiet=False, stream=_Terminal())
    assert not progress.wanted(as_json=False, quiet=True, stream=_Terminal())
    assert not progress.wanted(as_json=False, quiet=False, stream=io.StringIO())


def test_without_rich_the_command_runs_with_no_bar_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # `import rich.progress` now raises ImportError
    screen = _Terminal()
    with progress.bar("check", 3, enabled=True, stream=screen) as advance:
        for _ in range(3):
            advance()
    assert screen.getvalue() == ""


def test_with_rich_the_bar_counts_on_the_stream() -> None:
    screen = _Terminal()
    with progress.bar("check", 2, enabled=True, stream=screen) as advance:
        advance()
        advance()
    assert "check" in screen.getvalue() and "2/2" in screen.getvalue()

"""Fixtures for the web tests: a real engine on a SQLite file against the sandbox, the console as a
werkzeug test client, and helpers to read its forms.

- ``web_engine``: an ``Engine`` (fake clock) on ``sqlite_url`` against the ``sandbox``.
- ``console_for(engine, settings=None, secure=False)``: a ``Client`` on a ``ConsoleApp``; without
  settings the console has no login (the loopback mode).
- ``csrf(html)``: the CSRF token of the first form on a page.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.test import Client

from engine import Engine, FakeClock
from engine.config import ConsoleSettings
from engine.web.console import make_console

ConsoleFor = Callable[..., Client]


@pytest.fixture
def web_engine(sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock) -> Engine:
    """An engine on a fresh SQLite file, against the sandbox, on the fake clock."""
    return engine_on(sqlite_url, clock=clock)


@pytest.fixture
def console_for() -> ConsoleFor:
    """Build a test client on a console for an engine (see the module docstring)."""

    def make(engine: Engine, settings: ConsoleSettings | None = None, *, secure: bool = False,
             **kw: Any) -> Client:
        return Client(make_console(engine, settings or ConsoleSettings(), secure_cookies=secure, **kw))

    return make


def csrf_of(html: str) -> str:
    """The CSRF token in a console page's form."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match[1]


@pytest.fixture
def csrf() -> Callable[[str], str]:
    """``csrf_of`` as a fixture (conftest modules are not importable from tests)."""
    return csrf_of

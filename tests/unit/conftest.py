"""Fixtures of the fast suite: pure tests, no HTTP, no database, no sandbox.

Run it alone with ``pytest tests/unit`` (about a second), or from anywhere with ``pytest -m unit``:
every test collected from this folder carries the ``unit`` marker (and ``-m "not unit"`` runs the rest).

Every test in this folder runs with outbound sockets refused (``no_network``, autouse): a unit test
that reaches for the network or a database server fails instead of quietly becoming an
integration test. SQLite files are not sockets, so the guard does not see them; keep them out too.

- ``clock``: an ``engine.clock.FakeClock`` at ``unit.fakes.T0`` (overrides the suite-wide one).
- ``client``: a recording ``FakeClient``; ``ports``: ``FakePorts`` around both (one try per call).
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from unit.fakes import T0, FakeClient, FakePorts, NetworkUsedError

from engine.clock import FakeClock

UNIT_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Register ``unit`` (the suite runs with ``--strict-markers``)."""
    config.addinivalue_line("markers", "unit: a pure test of tests/unit (no HTTP, no database)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of this folder ``unit``; this hook sees every collected item, so filter by path."""
    for item in items:
        if UNIT_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse ``connect`` (and ``create_connection``) on every socket for the test's duration."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkUsedError(f"unit tests may not open connections (tried {args[1:]!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


@pytest.fixture
def clock() -> FakeClock:
    """The step's time, 2026-03-01T09:00Z; tests move it with ``advance``."""
    return FakeClock(T0)


@pytest.fixture
def client() -> Iterator[FakeClient]:
    """A recording fake client; a test fails if it scripted an answer no call consumed."""
    fake = FakeClient()
    yield fake
    assert fake.unused() == {}, "scripted answers were never asked for"


@pytest.fixture
def ports(client: FakeClient, clock: FakeClock) -> FakePorts:
    """The ports of one step: ``client``, ``clock``, one try per ``call``."""
    return FakePorts(client, clock)

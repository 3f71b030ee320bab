"""Shared fixtures (STYLE: documented fixtures; one repository contract run on every backend).

- ``db_url``: a fresh database, parametrised over a SQLite file and PostgreSQL. PostgreSQL runs
  when ``PROVISION_TEST_PG_URL`` is set (``.ci/run`` sets it); each test gets its own schema.
  Outside CI the PostgreSQL cases skip with a reason when it is not configured; in CI they fail.
- ``sandbox``: the simulator on 127.0.0.1, port 0, fresh per test.
- ``make_engine``: builds engines on ``db_url`` against ``sandbox`` and closes them afterwards.
- ``clock``: a ``FakeClock``; ``waits``: a list that records every in-process retry sleep.
- ``clocked_sandbox``: the simulator reading its time from ``clock`` (see "Time" below).

Time: one fake-clock mechanism, ``engine.clock.FakeClock``, and no other (no freezegun, no real
sleeps). A test that moves time builds its engines with ``clock=clock`` and moves the clock itself
(``clock.now = moment`` or ``clock.advance(seconds)``); ``pytest.mark.clock_at(moment)`` on a test or
module starts it at ``moment``. When the simulator must agree with the engine (token lifetimes, the
Reconnect window, ``oauth.user.refresh_time``), it gets the same clock through
``sandbox.start(now=lambda: clock().timestamp())`` (epoch seconds): a module marked
``sandbox_on_clock`` gets that as ``sandbox``, or it starts its own sandbox that way. Why not
freezegun: it patches the time of the whole process (the sandbox's server threads, urllib3, Fernet
timestamps), which hides code that reads the time instead of taking the injected clock.
``tests/unit/test_isolation.py`` checks that no test imports it.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import PG_ENV, TEST_KEY, pg_url_or_skip

from engine import ElementsClient, Engine, EngineSettings, FakeClock, RetryPolicy
from engine.config import ClientSettings
from engine.wiring import open_repository
from sandbox import start as start_sandbox


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a new, empty schema (dropped afterwards)."""
    base = pg_url_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL at {PG_ENV} unreachable: {type(exc).__name__}")
    # application_name names the test's sessions, so a test that terminates "its" sessions (a
    # simulated restart) finds exactly those, also while other tests run in parallel (pytest -n).
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}",
                                               "application_name": schema})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/provision.db"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A fresh SQLite file URL (for tests that need only the embedded default)."""
    return f"sqlite:///{tmp_path}/provision.db"


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The Cloud Elements / Intuit simulator on a free loopback port; on ``clock``'s time (it is
    ``clocked_sandbox``) in a test or module marked ``sandbox_on_clock``."""
    if request.node.get_closest_marker("sandbox_on_clock"):
        yield request.getfixturevalue("clocked_sandbox")
        return
    sb = start_sandbox(port=0)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """A fake clock starting 2026-01-01T00:00Z, or at ``moment`` under ``pytest.mark.clock_at(moment)``."""
    marker = request.node.get_closest_marker("clock_at")
    return FakeClock(marker.args[0]) if marker else FakeClock()


@pytest.fixture
def clocked_sandbox(clock: FakeClock) -> Iterator[Any]:
    """The simulator on a free loopback port whose time is ``clock``'s (epoch seconds)."""
    sb = start_sandbox(port=0, now=lambda: clock().timestamp())
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def waits() -> list[float]:
    """Recorded in-process retry waits (the engine's ``sleep``)."""
    return []


@pytest.fixture
def engine_on(sandbox: Any, waits: list[float]) -> Iterator[Callable[..., Engine]]:
    """Factory: ``engine_on(db_url, clock=None, policy=None, settings=None, base_url=None, sim=None,
    **client_kw)``; ``sim`` is the simulator to talk to (default: ``sandbox``)."""
    made: list[Engine] = []

    def make(url: str, *, clock: Callable[[], Any] | None = None, policy: RetryPolicy | None = None,
             settings: EngineSettings | None = None, base_url: str | None = None,
             user_secret: str | None = None, sim: Any = None, observer: Any = None,
             **client_kw: Any) -> Engine:
        sim = sim or sandbox
        repo = open_repository(url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
        client = ElementsClient(ClientSettings(
            base_url=base_url or sim.base_url,
            user_secret=user_secret or "sandbox-user-secret",
            org_secret="sandbox-org-secret", provider_root=f"{sim.root_url}/_provider", **client_kw))
        kw: dict[str, Any] = {"sleep": waits.append, "policy": policy, "settings": settings,
                              "observer": observer}
        if clock is not None:
            kw["clock"] = clock
        eng = Engine(repo, client, **kw)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.close()


@pytest.fixture
def make_engine(db_url: str, engine_on: Callable[..., Engine]) -> Callable[..., Engine]:
    """Factory: an engine on ``db_url`` (both backends) against ``sandbox``; closed afterwards."""
    return lambda **kw: engine_on(db_url, **kw)

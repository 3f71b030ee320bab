"""Helpers shared by the test modules (imported as ``testkit``; conftest files cannot be imported
reliably because every test directory may have its own)."""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

import pytest
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet

from engine import Engine
from engine.config import ServeSettings
from engine.web.queue_warnings import QueueWarnings
from engine.web.wsgi_server import run_server
from states import State

TEST_KEY = Fernet.generate_key().decode()
PG_ENV = "PROVISION_TEST_PG_URL"


def pg_url_or_skip() -> str:
    """The PostgreSQL URL for tests; skip (outside CI) or fail (in CI) when it is not set."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} must be set in CI: PostgreSQL tests may not skip there")
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV}=postgresql+psycopg://postgres@127.0.0.1:5432/test")
    return url


def pg_binaries_or_skip(find_bin_dir: Callable[[], Path], missing: type[Exception]) -> Path:
    """The folder of a private PostgreSQL's binaries (``bench/pg_local.find_bin_dir``); skip
    (outside CI) or fail (in CI) when the ``pgserver`` wheel is missing, as ``pg_url_or_skip`` does."""
    try:
        return find_bin_dir()
    except missing as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))


def consent(url: str, decision: str = "approve", company: str = "sandbox") -> str:
    """Play the user on the sandbox consent page; returns the redirect Location."""
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "decision" in page.text
    resp = requests.post(
        url, data={"decision": decision, "company": company}, allow_redirects=False, timeout=5
    )
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


class StartKeys(TypedDict):
    """The ``Engine.start`` keywords of the QuickBooks development app (``**QBO``)."""

    api_key: str
    api_secret: str
    callback_url: str
    config: dict[str, str]


#: Development keys reach only sandbox companies, and only with the element's sandbox flag
#: (devportal quickbooksonline/tips.md; the sandbox answers 3100 without it).
SANDBOX_COMPANY = {"use_sandbox": "true"}
QBO: StartKeys = {"api_key": "dev-consumer-key", "api_secret": "dev-consumer-secret",
                  "callback_url": "https://app.example.com/cb", "config": SANDBOX_COMPANY}
QUICK_CONFIG = {
    "oauth.api.key": "dev-consumer-key", "oauth.api.secret": "dev-consumer-secret",
    "oauth.user.token": "qyprd-user-token", "oauth.user.token.secret": "user-token-secret",
    "quickbooks.realm.id": "123146096291789", "oauth.callback.url": "https://app.example.com/cb",
    **SANDBOX_COMPANY,
}


def connected(engine: Engine, customer: str = "acme-42", *, name: str = "books", **start: Any) -> str:
    """A PROVISIONED OAuth2 QuickBooks connection of ``customer``: started (``start``: more
    ``Engine.start`` keywords), consented on the sandbox's page, driven to the end; its id."""
    attempt = engine.start("quickbooks", name, flow="oauth2", customer=customer, **QBO, **start)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(attempt.id)) or ""))
    engine.run_until_idle()
    assert engine.get(attempt.id).state is State.PROVISIONED
    return attempt.id


def renewal_rejected(engine: Engine, clock: Any, sandbox: Any, customer: str = "acme-42",
                     **start: Any) -> str:
    """A connection whose renewal the provider refused: FAILED(renewal_rejected) with its instance.

    Someone else uses (and so rotates away) the attempt's refresh token; ``clock`` (the engine's
    ``FakeClock``) is moved to each due time until the engine's own refresh is refused.
    """
    attempt_id = connected(engine, customer, **start)
    stolen = engine.get(attempt_id).secrets["user_tokens"]["oauth.user.refresh_token"]
    r = requests.post(f"{sandbox.root_url}/_provider/oauth2/tokens/bearer",
                      auth=(QBO["api_key"], QBO["api_secret"]),
                      data={"grant_type": "refresh_token", "refresh_token": stolen}, timeout=5)
    assert r.status_code == 200
    while engine.get(attempt_id).state is State.PROVISIONED:
        due = engine.get(attempt_id).next_run_at
        assert due is not None
        clock.now = due
        engine.run_until_idle()
    failed = engine.get(attempt_id)
    assert failed.state is State.FAILED and failed.failure_reason == "renewal_rejected" and failed.instance_id
    return attempt_id


_REALMS = itertools.count(1)


def quick_config(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``QUICK_CONFIG`` naming a QuickBooks company (``quickbooks.realm.id``) no other call named.

    A quick start whose realm a live attempt connects is refused (``engine.core.realm_start``), so
    tests that keep several quick attempts live give each its own company.
    """
    return {**QUICK_CONFIG, "quickbooks.realm.id": f"9130{next(_REALMS):011d}", **(extra or {})}


@contextmanager
def attempt_writes(engines: Iterable[sa.Engine]) -> Iterator[list[tuple[str, int]]]:
    """Records the writes of ``attempts`` sent through ``engines`` (``Repository.engines``):
    ("transition", rows) or ("claim", 1).

    ``rows`` is how many rows' parameters one statement carried (an executemany carries many);
    PostgreSQL's one-statement transition (``WITH moved AS``) counts as one row.
    """
    seen: list[tuple[str, int]] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        text = " ".join(statement.split())
        if text.startswith("WITH moved AS"):
            seen.append(("transition", 1))
        elif text.startswith("UPDATE attempts SET"):
            columns = [part.split("=")[0].strip() for part in text[20:].split(" WHERE ")[0].split(",")]
            if "state" in columns:  # claims and reschedules leave the state alone
                seen.append(("transition", len(parameters) if many else 1))
            elif "runs" in columns:  # the claim sets lease_owner, lease_expires_at, runs = runs + 1
                seen.append(("claim", 1))

    with listening(engines, before_cursor_execute=on_execute):
        yield seen


@contextmanager
def listening(engines: Iterable[sa.Engine], **handlers: Callable[..., None]) -> Iterator[None]:
    """SQLAlchemy event handlers (``before_cursor_execute=fn``, ``commit=fn``) on ``engines``
    (``Repository.engines``) for the duration of the block."""
    engines = list(engines)
    for db in engines:
        for name, fn in handlers.items():
            sa.event.listen(db, name, fn)
    try:
        yield
    finally:
        for db in engines:
            for name, fn in handlers.items():
                sa.event.remove(db, name, fn)


def provision_path() -> str:
    """The installed ``provision`` console script next to this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).with_name("provision")
    found = str(beside) if beside.exists() else shutil.which("provision")
    if not found:
        pytest.skip("the provision console script is not installed")
    return found


@contextmanager
def in_background(run: Callable[..., None], *args: Any, **kw: Any) -> Iterator[Any]:
    """Run a blocking ``serve``-style function (``ready=``, ``stop=`` keywords) in a thread; yields
    what it reports once listening (the base URL; ``run_server``'s port), and stops it after the
    block: it must have stopped within 10 s."""
    stop, started = threading.Event(), threading.Event()
    ready: list[Any] = []

    def on_ready(reported: Any) -> None:
        ready.append(reported)
        started.set()

    thread = threading.Thread(target=run, args=args, kwargs={**kw, "ready": on_ready, "stop": stop},
                              daemon=True)
    thread.start()
    assert started.wait(10), "server did not start"
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "server did not stop"


@contextmanager
def on_waitress(app: Any, settings: ServeSettings | None = None,
                queue_warnings: QueueWarnings | None = None) -> Iterator[int]:
    """``app`` under the production server of ``provision serve`` (``run_server``: waitress) on a
    free loopback port, in a thread; yields the port."""
    with in_background(run_server, app, "127.0.0.1", 0, settings=settings or ServeSettings(),
                       queue_warnings=queue_warnings) as port:
        yield int(port)


def stored_rows(db: Engine | sa.Engine) -> dict[str, list[str]]:
    """Every row of every table in the database (by name, as sorted reprs), migrations' included.

    Two equal results mean nothing was inserted, updated or deleted anywhere: the attempts, their
    history and events, the callback inbox, worker rows and realm claims alike.
    """
    connectable = db if isinstance(db, sa.Engine) else db.repo.engine
    with connectable.connect() as conn:
        if connectable not in _TABLE_NAMES:  # the catalogue query costs more than the rows on PostgreSQL
            _TABLE_NAMES[connectable] = sorted(sa.inspect(conn).get_table_names())
        return {name: sorted(repr(tuple(row)) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"')))
                for name in _TABLE_NAMES[connectable]}


_TABLE_NAMES: weakref.WeakKeyDictionary[sa.Engine, list[str]] = weakref.WeakKeyDictionary()

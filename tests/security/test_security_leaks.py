"""Secrets never leave the encrypted blobs: database bytes, logs, CLI output, the console and the
customer pages.

Unique secret strings are planted (api secret, platform user/org secrets, quick-flow user tokens)
and every secret the sandbox issues along the way (request tokens and their secrets, verifiers,
codes, instance tokens, OAuth1/OAuth2 user tokens, refresh tokens, rotated ones included) is
harvested from the sandbox afterwards. Then every place a secret could surface is searched for all
of them: zero hits. The request token may appear in the consent URL only (the user must open it).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from markupsafe import escape
from testkit import SANDBOX_COMPANY, TEST_KEY, StartKeys, consent
from webhook_receiver import new_secret, receiving
from werkzeug.test import Client

from engine import ElementsClient, Engine, FakeClock, RetryPolicy
from engine.cli.main import main as cli_main
from engine.clients.webhooks import WebhookSender
from engine.config import ClientSettings, ConsoleSettings, WebhookSettings
from engine.errors import CallbackRejectedError
from engine.security.redaction import install as install_log_redaction
from engine.web.callback_app import make_app
from engine.web.console import make_console
from engine.web.progress_tokens import ProgressTokens
from engine.wiring import open_repository
from persistence.schema import attempts, callbacks, events, history
from sandbox import Sandbox
from sandbox import start as start_sandbox

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0)]
PLANT = uuid.uuid4().hex[:10]
API_SECRET = f"apisecret-{PLANT}-x"
USER_SECRET = f"usersecret-{PLANT}-x"
ORG_SECRET = f"orgsecret-{PLANT}-x"
WRONG_USER_SECRET = f"wronguser-{PLANT}-x"
QUICK_TOKEN = f"quicktoken-{PLANT}-x"
QUICK_TOKEN_SECRET = f"quicktokensecret-{PLANT}-x"
PROVISION = Path(sys.executable).with_name("provision")


@contextmanager
def planted(now: Callable[[], float] | None = None) -> Iterator[Sandbox]:
    """A sandbox that accepts only ``USER_SECRET`` / ``ORG_SECRET``; ``now`` is its clock (default: real)."""
    sb = start_sandbox(port=0, user_secret=USER_SECRET, org_secret=ORG_SECRET, now=now)
    try:
        yield sb
    finally:
        sb.stop()


def _key_like(name: str) -> bool:
    return any(h in name.lower() for h in ("secret", "token", "verifier", "code", "password"))


def harvest(sb: Sandbox) -> set[str]:
    """Every secret the sandbox ever issued or accepted (needles for the search)."""
    st = sb.store
    found: set[str] = set()
    with st.lock:
        for rt in st.request_tokens.values():
            found |= {rt.secret, rt.verifier or ""}
        found |= set(st.codes)
        for at in st.access_tokens.values():
            found |= {at.token, at.secret}
        found |= set(st.refresh_tokens)
        for inst in st.instances.values():
            found.add(inst.token)
            found |= {str(v) for k, v in inst.configuration.items() if _key_like(k) and v}
    return {s for s in found if s and len(s) >= 8}


def request_tokens(sb: Sandbox) -> set[str]:
    with sb.store.lock:
        return set(sb.store.request_tokens)


def hits(text: str | bytes, needles: set[str]) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return sorted(n for n in needles if n.encode() in data)


def make(
    url: str, sb: Sandbox, clock: FakeClock, *, user_secret: str = USER_SECRET,
    policy: RetryPolicy | None = None,
) -> Engine:
    repo = open_repository(url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    client = ElementsClient(
        ClientSettings(
            base_url=sb.base_url,
            user_secret=user_secret,
            org_secret=ORG_SECRET,
            provider_root=f"{sb.root_url}/_provider",
            read_timeout=5,
        )
    )
    # An Engine built by hand leaves logging alone; redaction is installed the way an embedder
    # that does not use open_engine does it (after its handlers, here pytest's caplog, exist).
    install_log_redaction()
    return Engine(
        repo, client, sleep=lambda s: None, policy=policy or RetryPolicy(budget=2, durable_initial=1),
        clock=clock,
    )


QBO: StartKeys = {"api_key": "dev-consumer-key", "api_secret": API_SECRET,
                  "callback_url": "https://app.example.com/cb", "config": SANDBOX_COMPANY}


def _settle(engine: Engine, clock: FakeClock, rounds: int = 8) -> None:
    """Run until idle, moving time past every durable retry (the budget is small)."""
    for _ in range(rounds):
        engine.run_until_idle()
        due = engine.repo.next_due_at()
        if due is None or due > T0 + timedelta(days=1):
            return
        clock.now = due


def drive_every_flow(url: str, sb: Sandbox, clock: FakeClock) -> tuple[Engine, dict[str, str]]:
    """Run every flow, its failures and its renewals; returns the engine and attempt ids by label.

    ``sb`` must read its time from ``clock`` (renewals are due months after ``T0``).
    """
    ids: dict[str, str] = {}
    engine = make(url, sb, clock)
    for flow in ("oauth1", "oauth2"):  # engine-owned, so that the engine's renewals run too
        a = engine.start("quickbooks", f"ok {flow}", flow=flow, renewal="engine", **QBO)
        engine.run_until_idle()
        assert (
            engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or "")).status
            == "applied"
        )
        ids[flow] = a.id
    quick_cfg = {"oauth.api.key": "dev-consumer-key", "oauth.api.secret": API_SECRET,
                 "oauth.user.token": QUICK_TOKEN, "oauth.user.token.secret": QUICK_TOKEN_SECRET,
                 "quickbooks.realm.id": "123146096291789", "oauth.callback.url": "https://app.example.com/cb",
                 "oauth.user.refresh_interval": str(100 * 86400), **SANDBOX_COMPANY}
    ids["quick"] = engine.start("quickbooks", "ok quick", flow="quick", config=quick_cfg).id
    denied = engine.start("quickbooks", "denied", flow="oauth1", **QBO)
    prod = engine.start("quickbooks", "invalid db", flow="oauth2", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(denied.id)) or "", decision="deny"))
    engine.handle_callback(consent(engine.redirect_url(engine.get(prod.id)) or "", company="production"))
    # A duplicate and a tampered callback (rejected, recorded encrypted in the inbox).
    extra = engine.start("quickbooks", "replay", flow="oauth1", **QBO)
    engine.run_until_idle()
    location = consent(engine.redirect_url(engine.get(extra.id)) or "")
    assert engine.handle_callback(location).status == "applied"
    assert engine.handle_callback(location).status == "duplicate"
    with pytest.raises(CallbackRejectedError):
        engine.handle_callback(location.replace("state=", "state=x"))
    ids.update(denied=denied.id, invalid_database=prod.id)
    sb.set_faults(fails={"create_instance": {"rate": 1.0, "status": 503}})
    ids["retries_503"] = engine.start("quickbooks", "unavailable", flow="quick",  # its own company
                                      config={**quick_cfg, "quickbooks.realm.id": "123146096291790"}).id
    _settle(engine, clock)
    sb.set_faults()
    engine.run_until_idle()
    unauthorized = make(url, sb, clock, user_secret=WRONG_USER_SECRET)
    ids["unauthorized"] = unauthorized.start(
        "quickbooks", "401", flow="quick", config={**quick_cfg, "quickbooks.realm.id": "123146096291791"}).id
    unauthorized.run_until_idle()
    assert unauthorized.parking.parked  # a 401 parks the queue (issue 15 must-have 6)
    unauthorized.close()
    # Renewals: OAuth2 refresh grant (rotating refresh token), OAuth1 Reconnect, quick Reconnect.
    for label in ("oauth2", "oauth2", "quick", "oauth1"):  # time only moves forward
        due = engine.get(ids[label]).next_renewal_at
        if due is not None:
            clock.now = max(due, clock()) + timedelta(minutes=1)
            engine.run_until_idle()
    states = {k: engine.get(v) for k, v in ids.items()}
    assert states["oauth1"].renewals >= 1 and states["oauth2"].renewals >= 1, states
    assert states["denied"].failure_reason == "user_denied"
    assert (
        states["invalid_database"].last_error
        and states["invalid_database"].last_error["kind"] == "invalid_database"
    )
    assert states["retries_503"].failure_reason == "retries_exhausted"
    assert states["unauthorized"].failure_reason is None  # not charged for the engine's bad secret
    return engine, ids


def database_bytes(url: str, engine: Engine) -> bytes:
    """The SQLite file (with its WAL), or every PostgreSQL row rendered as text."""
    if url.startswith("sqlite"):
        path = Path(sa.make_url(url).database or "")
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.suffix != ".key")
    out: list[bytes] = []
    with engine.repo.engine.connect() as conn:
        for table in (attempts, history, callbacks, events):
            # repr() shows every column; blobs as bytes literals, where plaintext would still be readable.
            out.extend(repr(tuple(r)).encode() for r in conn.execute(sa.select(table)))
    return b"\n".join(out)


def run_cli(url: str, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(PROVISION), "--db", url, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout + proc.stderr


def cli_out(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI in-process (``PROVISION_DB_URL`` is set); stdout + stderr."""
    capsys.readouterr()
    assert cli_main(list(args)) == 0
    out = capsys.readouterr()
    return out.out + out.err


@pytest.fixture
def planted_clocked_sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    """``planted`` reading its time from ``clock``, for ``drive_every_flow``."""
    with planted(lambda: clock().timestamp()) as sb:
        yield sb


def test_no_secret_anywhere(db_url: str, planted_clocked_sandbox: Sandbox, clock: FakeClock,
                            caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    sb = planted_clocked_sandbox
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("PROVISION_DB_URL", db_url)
    engine, ids = drive_every_flow(db_url, sb, clock)
    # A fresh OAuth1 attempt left REDIRECTED: its consent URL legitimately shows the request token.
    waiting = engine.start("quickbooks", "waiting", flow="oauth1", **QBO)
    engine.run_until_idle()
    consent_url = engine.redirect_url(engine.get(waiting.id)) or ""
    assert consent_url
    needles = harvest(sb) | {
        API_SECRET,
        USER_SECRET,
        ORG_SECRET,
        WRONG_USER_SECRET,
        QUICK_TOKEN,
        QUICK_TOKEN_SECRET,
    }
    assert len(needles) > 25  # the flows really issued verifiers, codes, tokens...
    tokens = request_tokens(sb)
    everything = needles | tokens

    # 1. The database: plain columns, history, inbox reasons (file bytes for SQLite).
    assert hits(database_bytes(db_url, engine), everything) == []
    # 2. Logs, urllib3 DEBUG request lines (apiSecret, requestToken in queries) included.
    assert any("oauth/token" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3"))
    assert hits("\n".join(r.getMessage() for r in caplog.records) + caplog.text, everything) == []

    # 3. The operator console (list, views, every attempt with its actions, diagrams): like `show`,
    # it shows the consent URL of a REDIRECTED attempt (to a signed-in operator) and nothing else.
    client = Client(make_console(engine, ConsoleSettings()))
    pages = [client.get(url).get_data() for url in ("/", "/?view=attention", "/?state=FAILED")]
    for attempt_id in [*ids.values(), waiting.id]:
        for suffix in ("", "/diagram.mmd", "/cancel", "/restart"):
            resp = client.get(f"/attempts/{attempt_id}{suffix}")
            assert resp.status_code in (200, 409)  # 409: the action does not apply in this state
            pages.append(resp.get_data())
    shown = b"\n".join(pages).decode()
    assert escape(consent_url) in shown
    assert hits(shown.replace(str(escape(consent_url)), "<consent url>"), everything) == []
    # The public receiver's pages (progress of every attempt, a refused link): none of it either.
    links = ProgressTokens()
    receiver = Client(make_app(engine, tokens=links, probe=lambda: None))
    public = [receiver.get(f"/callback/progress?t={links.issue(i)}").get_data()
              for i in [*ids.values(), waiting.id]]
    public += [receiver.get(url).get_data() for url in ("/callback?state=x&code=y", "/readyz", "/status")]
    assert hits(b"\n".join(public), everything) == []

    # 4. The CLI's reading verbs (in-process: fast; the subprocess test below covers stderr logging).
    outputs = [cli_out(capsys, "list"), cli_out(capsys, "--json", "list")]
    for attempt_id in [*ids.values(), waiting.id]:
        outputs += [cli_out(capsys, "show", attempt_id), cli_out(capsys, "--json", "show", attempt_id),
                    cli_out(capsys, "diagram", attempt_id, "--format", "mermaid")]
    text = "\n".join(f"--db {db_url} " + o for o in outputs)
    assert consent_url in text
    assert hits(text.replace(consent_url, "<consent url>"), everything) == []

    # 5. Events (issue 10/12): the feed, `provision events`, hooks and signed webhook bodies.
    feed = [e.payload for e in engine.events(limit=10_000)]
    assert len(feed) > 30 and any(p["type"] == "connection.renewed" for p in feed)
    events_out = cli_out(capsys, "--json", "events", "--limit", "10000") + cli_out(capsys, "events")
    secret = new_secret()
    with receiving(secret) as hook_receiver:
        sender = WebhookSender(WebhookSettings(url=hook_receiver.url, secret=secret))
        hooked = Engine(engine.repo, engine.client, webhooks=sender)
        while hooked.deliver_events():
            pass
        sender.close()
    bodies = [repr(r.payload) for r in hook_receiver.accepted()]
    assert len(bodies) == len(feed)
    text = repr(feed) + events_out + "\n".join(bodies)
    assert consent_url in text  # the waiting attempt's redirect event
    assert hits(text.replace(consent_url, "<consent url>"), everything) == []
    engine.close()


def test_cli_flow_verbose_worker_and_callback_never_print_secrets(
    sqlite_url: str, planted_sandbox: Sandbox
) -> None:
    """``start --api-secret``, ``worker -vv`` (urllib3 DEBUG on stderr) and ``callback`` over a real flow."""
    sb = planted_sandbox
    env = {**os.environ, "PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sb.base_url,
           "ELEMENTS_USER_SECRET": USER_SECRET, "ELEMENTS_ORG_SECRET": ORG_SECRET}
    outputs = []
    attempt_id = run_cli(sqlite_url, "start", "--element", "quickbooks", "--name", "cli", "--flow", "oauth1",
                         "--api-key", "dev-consumer-key", "--api-secret", API_SECRET,
                         "--callback-url", "https://app.example.com/cb", "--sandbox-company", env=env).strip()
    outputs.append(run_cli(sqlite_url, "-vv", "worker", "--once", env=env))
    assert "urllib3" in outputs[-1] and "oauth/token" in outputs[-1]  # the DEBUG lines were really printed
    show = run_cli(sqlite_url, "--json", "show", attempt_id, env=env)
    import json

    consent_url = json.loads(show)["redirect_url"]
    outputs.append(run_cli(sqlite_url, "-vv", "--json", "callback", consent(consent_url), env=env))
    outputs.append(run_cli(sqlite_url, "-vv", "worker", "--once", env=env))
    outputs.append(run_cli(sqlite_url, "--json", "show", attempt_id, env=env))
    assert '"PROVISIONED"' in outputs[-1], outputs
    everything = harvest(sb) | request_tokens(sb) | {API_SECRET, USER_SECRET, ORG_SECRET}
    assert hits("\n".join(outputs), everything) == []

"""The provider side of ``check`` (issue 10/12 must-have 5): where the engine owns the tokens,
``Engine.check`` / ``provision check`` also asks Intuit whether the user's token still works, by a
QuickBooks CompanyInfo read that spends and rotates nothing. The sandbox's operator endpoint revokes
the token as a user disconnecting the app would; the 401 makes the connection unhealthy with reason
``provider_rejected``, emitted once as ``connection.unhealthy`` and shown by ``list``. The token never
appears in logs, events or CLI output. Real HTTP against the sandbox; SQLite and PostgreSQL."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from testkit import QBO, QUICK_CONFIG, SANDBOX_COMPANY, TEST_KEY, consent

from engine import Engine, FakeClock
from engine.core import events as ev
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))
QUICK_OAUTH2 = {"oauth.api.key": "dev-consumer-key", "oauth.api.secret": "dev-consumer-secret",
                "authentication.type": "oauth2", "oauth.user.refresh_token": "AB11-check-refresh-token",
                "quickbooks.realm.id": "123146096291789", **SANDBOX_COMPANY}


def company_reads(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if "/companyinfo/" in r["path"]]


def invalidate(sim: Any, token: str) -> None:
    resp = requests.post(f"{sim.root_url}/_sandbox/provider/tokens/invalidate", json={"token": token},
                         timeout=5)
    assert resp.status_code == 200 and resp.json()["invalidated"] >= 1, resp.text


def test_an_engine_owned_oauth2_token_revoked_at_the_provider_is_unhealthy(
        db_url: str, engine_on: Callable[..., Engine], clock: FakeClock, clocked_sandbox: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    engine = engine_on(db_url, clock=clock, sim=clocked_sandbox)
    a = engine.start("quickbooks", "Quick OAuth2", flow="quick", customer="acme-42", config=QUICK_OAUTH2)
    engine.run_until_idle()
    assert engine.get(a.id).state is State.PROVISIONED and engine.get(a.id).renewal_owner == "engine"
    # Before the engine's first refresh it holds no access token, and presenting the refresh token
    # would rotate it: only the platform is asked.
    assert engine.check(a.id).health == "healthy" and company_reads(clocked_sandbox) == []
    clock.now = engine.get(a.id).next_run_at or clock()
    engine.run_until_idle()  # the engine's refresh: it now holds an access token from Intuit
    renewed = engine.get(a.id)
    assert renewed.renewals == 1
    access = renewed.secrets["user_tokens"]["oauth.user.token"]
    presented = len(clocked_sandbox.refresh_presentations())
    assert engine.check(a.id).health == "healthy"
    (read,) = company_reads(clocked_sandbox)
    assert read["status"] == 200
    assert read["path"].endswith("/v3/company/123146096291789/companyinfo/123146096291789")
    assert len(clocked_sandbox.refresh_presentations()) == presented  # the check spent nothing
    invalidate(clocked_sandbox, access)
    clock.advance(60)
    sick = engine.check(a.id)
    assert (sick.state, sick.health, sick.health_reason) == (
        State.PROVISIONED, "unhealthy", "provider_rejected")
    assert company_reads(clocked_sandbox)[-1]["status"] == 401
    engine.check(a.id)  # still refused: no second event
    unhealthy = [e for e in engine.events(limit=100) if e.type == ev.UNHEALTHY]
    assert [(e.data["reason"], e.data["customer"]) for e in unhealthy] == [("provider_rejected", "acme-42")]
    assert "Intuit" in (unhealthy[0].data["hint"] or "")
    assert [(x.health, x.health_reason) for x in engine.list(customer="acme-42")] == [
        ("unhealthy", "provider_rejected")]
    everything = caplog.text + json.dumps([e.payload for e in engine.events(limit=100)])
    assert access not in everything and "AB11-check-refresh-token" not in everything


def test_an_engine_owned_oauth1_token_is_checked_signed_and_the_cli_shows_the_verdict(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    a = engine.start("quickbooks", "Quick OAuth1", flow="quick", customer="globex-7", config=QUICK_CONFIG)
    engine.run_until_idle()
    assert engine.get(a.id).renewal_owner == "engine"
    # A platform-owned consent connection is never checked at the provider.
    b = engine.start("quickbooks", "consented", flow="oauth2", customer="initech", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(b.id)) or ""))
    engine.run_until_idle()
    assert engine.check(b.id).health == "healthy" and company_reads(sandbox) == []
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "ELEMENTS_BASE_URL": sandbox.base_url, "ELEMENTS_USER_SECRET": "sandbox-user-secret",
           "ELEMENTS_ORG_SECRET": "sandbox-org-secret", "PATH": str(Path(sys.executable).parent)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PROVISION, *args], capture_output=True, text=True, env=env, timeout=60)

    ok = cli("check", a.id)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{a.id}  healthy", ok.stderr
    (read,) = company_reads(sandbox)
    assert read["status"] == 200 and "Authorization" not in json.dumps(read)  # the log keeps no secrets
    invalidate(sandbox, QUICK_CONFIG["oauth.user.token"])
    bad = cli("--json", "check", a.id)
    assert bad.returncode == 1, bad.stderr
    rows = json.loads(bad.stdout)["checks"]
    assert [(r["health"], r["reason"]) for r in rows] == [("unhealthy", "provider_rejected")]
    listed = cli("list", "--customer", "globex-7")
    assert "provider_rejected" in listed.stdout
    for out in (ok, bad, listed):
        assert QUICK_CONFIG["oauth.user.token"] not in out.stdout + out.stderr
        assert QUICK_CONFIG["oauth.user.token.secret"] not in out.stdout + out.stderr

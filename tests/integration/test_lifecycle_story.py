"""Issue 10/12's "Done means", as one story over real HTTP: a back-office job starts an attempt for
customer ``acme-42`` and learns through a Python hook AND a signed webhook (verified with the
``standardwebhooks`` verifier), never by polling, when the customer declined and why, when the
connection is made, and when it later needs consent again; an operator then disconnects it."""
from __future__ import annotations

from typing import Any

import requests
from test_events_webhooks import settle
from testkit import QBO, TEST_KEY, consent
from webhook_receiver import new_secret, receiving

from engine import ElementsClient, Engine, FakeClock, RetryPolicy
from engine.clients.webhooks import WebhookSender
from engine.config import ClientSettings, WebhookSettings
from engine.core import events as ev
from engine.core.events import Event
from engine.wiring import open_repository


def test_acme_42_is_told_everything_without_polling(db_url: str, sandbox: Any) -> None:
    clock = FakeClock()
    secret = new_secret()
    with receiving(secret, clock=clock) as receiver:
        repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
        client = ElementsClient(ClientSettings(base_url=sandbox.base_url, user_secret="sandbox-user-secret",
                                               org_secret="sandbox-org-secret",
                                               provider_root=f"{sandbox.root_url}/_provider"))
        engine = Engine(repo, client, clock=clock, sleep=lambda s: None,
                        webhooks=WebhookSender(WebhookSettings(url=receiver.url, secret=secret)),
                        policy=RetryPolicy(in_process_attempts=1))
        try:
            told: list[Event] = []
            engine.subscribe(told.append, types=[ev.PROVISIONED, ev.FAILED, ev.REAUTHORIZATION_REQUIRED,
                                                 ev.DISCONNECTED])
            # 1. The customer declines.
            first = engine.start("quickbooks", "Acme books", flow="oauth2", customer="acme-42", **QBO)
            engine.run_until_idle()
            consent_url = next(e for e in engine.events(limit=100)
                               if e.type == ev.REDIRECTED).data["consent_url"]
            engine.handle_callback(consent(consent_url, decision="deny"))
            # 2. The customer tries again (a FAILED attempt does not block) and connects.
            # Engine-owned: step 3 is the engine's own renewal meeting a refresh token someone else used.
            second = engine.start("quickbooks", "Acme books", flow="oauth2", customer="acme-42",
                                  renewal="engine", **QBO)
            engine.run_until_idle()
            redirected = [e for e in engine.events(limit=100) if e.type == ev.REDIRECTED]
            engine.handle_callback(consent(redirected[-1].data["consent_url"]))
            engine.run_until_idle()
            # 3. Months later the provider refuses the stored refresh token (someone used it).
            stolen = engine.get(second.id).secrets["user_tokens"]["oauth.user.refresh_token"]
            assert requests.post(f"{sandbox.root_url}/_provider/oauth2/tokens/bearer",
                                 auth=(QBO["api_key"], QBO["api_secret"]),
                                 data={"grant_type": "refresh_token", "refresh_token": stolen},
                                 timeout=5).status_code == 200
            for _ in range(3):  # the renewal, then its confirmation after the first rejection
                due = engine.get(second.id).next_run_at
                if due is None:
                    break
                clock.now = max(due, clock())
                engine.run_until_idle()
            # 4. An operator disconnects it.
            engine.disconnect(second.id, actor="ops")
            engine.run_until_idle()
            settle(engine, clock)
        finally:
            engine.close()
    wanted = [(first.id, ev.FAILED, "user_denied"), (second.id, ev.PROVISIONED, None),
              (second.id, ev.REAUTHORIZATION_REQUIRED, "renewal_rejected"),
              (second.id, ev.DISCONNECTED, None)]
    assert [(e.attempt_id, e.type, e.data["reason"]) for e in told] == wanted
    assert all(e.data["customer"] == "acme-42" for e in told)
    assert all(e.data["hint"] for e in told if e.data["reason"] is not None)  # why, and what to do
    signed = [r.payload for r in receiver.accepted() if r.payload is not None]  # verified signatures
    assert len(signed) == len(receiver.accepted())
    interesting = [(p["data"]["attempt_id"], p["type"], p["data"]["reason"]) for p in signed
                   if p["type"] in {ev.PROVISIONED, ev.FAILED, ev.REAUTHORIZATION_REQUIRED, ev.DISCONNECTED}]
    assert interesting == wanted
    assert all(p["data"]["customer"] == "acme-42" for p in signed)
    assert "did not approve" in next(p for p in signed if p["type"] == ev.FAILED)["data"]["hint"]
    reauth = next(p for p in signed if p["type"] == ev.REAUTHORIZATION_REQUIRED)
    assert "reauthorize" in reauth["data"]["hint"]

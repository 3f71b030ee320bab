"""Event types, payloads and webhook retry timing as pure functions (issue 10/12)."""
from __future__ import annotations

import random
import sys
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from engine.clients.webhooks import WebhookSender, WebhooksUnavailableError
from engine.config import WebhookSettings, check_webhook_secret
from engine.core import events as ev
from engine.core.delivery import EventDispatcher, body_of, retry_delay
from engine.errors import InvalidInputError
from persistence.outbox import OutboxEvent
from states.model import TRANSITIONS, State, Trigger

AT = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "whsec_" + "A" * 44  # base64 of 33 bytes


def row(trigger: str, source: str, dest: str, **kw: Any) -> OutboxEvent:
    base = OutboxEvent(seq=7, attempt_id="a-1", history_seq=3, created_at=AT, worker="w", instance_id=None,
                       trigger=trigger, source=source, dest=dest, note=None, error=None,
                       element_key="quickbooks", flow="oauth2", name="Acme", tags=("crm",),
                       attempt_state=dest, attempt_history_seq=3, reprovisioned=False, delivery="pending",
                       tries=0, last_error=None)
    return replace(base, **kw)


@pytest.mark.parametrize("trigger,source,dest,kw,expected", [
    ("issue_token", "NEW", "TOKEN_ISSUED", {}, ev.TOKEN_ISSUED),
    ("redirect", "NEW", "REDIRECTED", {}, ev.REDIRECTED),
    ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED", {}, ev.CALLBACK_RECEIVED),
    ("provision", "CALLBACK_RECEIVED", "PROVISIONED", {}, ev.PROVISIONED),
    ("quick_provision", "NEW", "PROVISIONED", {}, ev.PROVISIONED),
    ("provision", "CALLBACK_RECEIVED", "PROVISIONED", {"reprovisioned": True}, ev.RECOVERED),
    ("renew", "PROVISIONED", "PROVISIONED", {"reprovisioned": True}, ev.RENEWED),
    ("fail", "REDIRECTED", "FAILED", {"note": "user_denied"}, ev.FAILED),
    ("fail", "PROVISIONED", "FAILED", {"note": "renewal_rejected"}, ev.REAUTHORIZATION_REQUIRED),
    ("restart", "FAILED", "NEW", {}, ev.RESTARTED),
    ("reauthorize", "FAILED", "NEW", {}, ev.RESTARTED),
])
def test_event_type_of_each_transition(trigger: str, source: str, dest: str, kw: dict[str, Any],
                                       expected: str) -> None:
    assert ev.event_type(row(trigger, source, dest, **kw)) == expected


def test_every_transition_of_the_machine_has_a_known_type() -> None:
    for t in TRANSITIONS:
        assert ev.event_type(row(t.trigger.value, t.source.value, t.dest.value)) in ev.EVENT_TYPES


@pytest.mark.parametrize("reprovisioned", [False, True])
def test_the_feeds_type_prefilter_lets_every_event_of_the_type_through(reprovisioned: bool) -> None:
    # Engine.events(types=...) asks the database only for rows of may_have_type's triggers (or
    # with PROVISIONED as destination): every transition of the machine must pass for its type.
    for t in TRANSITIONS:
        r = row(t.trigger.value, t.source.value, t.dest.value, reprovisioned=reprovisioned)
        kind = ev.event_type(r)
        triggers, to_provisioned = ev.may_have_type(frozenset({kind}))
        assert r.trigger in triggers or (to_provisioned and r.dest == "PROVISIONED"), (t, kind)


def test_the_feeds_type_prefilter_leaves_other_triggers_out() -> None:
    triggers, to_provisioned = ev.may_have_type(frozenset({ev.REDIRECTED}))
    assert triggers == {"redirect"} and not to_provisioned
    triggers, to_provisioned = ev.may_have_type(frozenset({ev.RESTARTED, ev.FAILED}))
    assert triggers == {"restart", "reauthorize", "fail"} and not to_provisioned
    assert ev.may_have_type(frozenset({ev.RECOVERED}))[1]


def test_failed_payload_has_reason_hint_and_only_documented_error_fields() -> None:
    error = {"kind": "unauthorized", "message": "bad secrets", "status": 401, "hint": None,
             "endpoint": "create_instance", "request_id": "r-1", "extra": "not copied"}
    event = ev.to_event(row("fail", "NEW", "FAILED", error=error, note="permanent_error"))
    data = event.payload["data"]
    assert event.type == ev.FAILED and data["reason"] == "permanent_error"
    assert "ELEMENTS_USER_SECRET" in data["hint"]  # engine.errors' hint for the error's kind
    assert data["error"] == {"kind": "unauthorized", "message": "bad secrets", "status": 401,
                             "request_id": "r-1"}
    assert event.payload["timestamp"] == "2026-01-01T12:00:00Z"
    assert data["customer"] is None and data["tags"] == ["crm"] and data["state"] == "FAILED"
    rejected = ev.to_event(row("fail", "PROVISIONED", "FAILED", note="renewal_rejected"))
    assert "reauthorize" in rejected.data["hint"]
    plain = ev.to_event(row("fail", "NEW", "FAILED"))  # an old row without a known reason
    assert plain.data["reason"] == "permanent_error"


def test_only_the_redirect_carries_a_consent_url_and_ids_are_stable() -> None:
    redirect = ev.to_event(row("redirect", "NEW", "REDIRECTED"), "https://consent.example/x")
    assert redirect.data["consent_url"] == "https://consent.example/x"
    provisioned = ev.to_event(row("provision", "CALLBACK_RECEIVED", "PROVISIONED"), "https://ignored")
    assert "consent_url" not in provisioned.data and provisioned.data["reason"] is None
    again = ev.to_event(row("provision", "x", "PROVISIONED"))
    assert provisioned.webhook_id == "msg_a-1_3" == again.webhook_id
    assert body_of(provisioned) == body_of(ev.to_event(row("provision", "CALLBACK_RECEIVED", "PROVISIONED")))
    assert provisioned.as_dict()["seq"] == 7 and provisioned.as_dict()["id"] == "msg_a-1_3"


def test_retry_delay_doubles_with_jitter_and_honours_a_longer_retry_after() -> None:
    settings = WebhookSettings(url="https://hooks.example/x", secret=SECRET, backoff_initial=10,
                               backoff_max=80)
    rng = random.Random(1)
    for tries, window in ((1, 10), (2, 20), (3, 40), (4, 80), (9, 80)):
        for _ in range(20):
            assert window / 2 <= retry_delay(settings, tries, None, rng) <= window
    assert retry_delay(settings, 1, 600, rng) == 600
    assert 5 <= retry_delay(settings, 1, 0, rng) <= 10  # a shorter Retry-After does not hurry us
    assert retry_delay(settings, 1, 10**9, rng) == settings.retry_after_max


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!", "sk_" + "A" * 44, "whsec_c2hvcnQ=",
                                    "whsec_" + "A" * 100])
def test_webhook_secret_shape(secret: str) -> None:
    with pytest.raises(InvalidInputError, match="PROVISION_WEBHOOK_SECRET.*whsec_"):
        check_webhook_secret("PROVISION_WEBHOOK_SECRET", secret)


def test_webhook_settings_validate_and_hide_the_secret() -> None:
    assert check_webhook_secret("s", SECRET) == SECRET
    settings = WebhookSettings(url="https://hooks.example/x", secret=SECRET)
    assert SECRET not in repr(settings)
    with pytest.raises(InvalidInputError, match="PROVISION_WEBHOOK_URL"):
        WebhookSettings(url="hooks.example/x", secret=SECRET)
    assert State.PROVISIONED.value == "PROVISIONED" and Trigger.FAIL.value == "fail"


def test_a_missing_standardwebhooks_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "standardwebhooks", None)
    monkeypatch.setitem(sys.modules, "standardwebhooks.webhooks", None)
    with pytest.raises(WebhooksUnavailableError, match="standardwebhooks") as info:
        WebhookSender(WebhookSettings(url="https://hooks.example/x", secret=SECRET))
    assert "element-provisioner[webhooks]" in str(info.value)


class _BrokenOutbox:
    """An outbox whose reads fail after the subscription (the database went away)."""

    def last_seq(self) -> int:
        return 0

    def read(self, *args: Any, **kw: Any) -> list[OutboxEvent]:
        raise ConnectionError("database unreachable")


def test_hooks_never_raise_into_the_caller_of_a_commit(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = EventDispatcher(_BrokenOutbox(), worker_id="w", clock=lambda: AT,  # type: ignore[arg-type]
                                 consent_url=lambda waiting: {})
    dispatcher.subscribe(lambda e: None)
    assert dispatcher.dispatch_hooks() == 0 and dispatcher.after_commit(AT) == 0
    assert "reading events for the hooks failed" in caplog.text

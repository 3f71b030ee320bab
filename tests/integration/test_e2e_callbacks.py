"""Callback matching (DESIGN §6): every rejection changes nothing; a rejected callback that matches
its attempt (by state hash) is recorded in the inbox, a forged or unknown one is only counted."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from testkit import QBO, consent

from engine import CallbackRejectedError, Engine
from engine.core.callbacks import MAX_PENDING
from engine.core.step_ports import StepPorts
from states import State


def redirected(engine: Engine, flow: str = "oauth1", **kw: Any) -> tuple[Any, str]:
    a = engine.start("quickbooks", "Cb", flow=flow, **QBO, **kw)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.REDIRECTED
    return a, consent(engine.redirect_url(a) or "")


def with_params(location: str, **changes: str | None) -> str:
    parts = urlsplit(location)
    params = dict(parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = v
    return parts._replace(query=urlencode(params)).geturl()


def assert_rejected(engine: Engine, url: str, reason: str, attempt: Any, *, stored: bool = True) -> None:
    """``url`` is refused for ``reason``; stored in the inbox when it matched, else only counted."""
    before = engine.get(attempt.id)
    history_before = engine.history(attempt.id)
    rows_before = engine.repo.callbacks()
    counted_before = sum(engine.callbacks.unmatched_counts().values())
    with pytest.raises(CallbackRejectedError) as info:
        engine.handle_callback(url)
    assert reason in info.value.reason
    after = engine.get(attempt.id)
    assert (after.state, after.version) == (before.state, before.version)
    assert engine.history(attempt.id) == history_before
    rows = engine.repo.callbacks()
    if stored:
        assert len(rows) == len(rows_before) + 1
        assert rows[-1].status == "rejected" and reason in (rows[-1].reason or "")
    else:
        assert rows == rows_before  # a forged callback must not cost a row
        counts = engine.callbacks.unmatched_counts()
        assert sum(counts.values()) == counted_before + 1
        assert any(reason in key for key in counts)


def test_unknown_state(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, with_params(location, state="00000000-0000-0000-0000-000000000000.x"),
                    "unknown state", a, stored=False)


def test_forged_state_for_a_real_attempt(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, with_params(location, state=f"{a.id}.forged-nonce"), "state does not match", a,
                    stored=False)


def test_missing_state(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, with_params(location, state=None), "no 'state'", a, stored=False)


def test_oauth1_callback_must_carry_the_issued_request_token(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, with_params(location, oauth_token="qyprd-someone-elses"), "request token", a)


def test_missing_verifier(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, with_params(location, oauth_verifier=None), "oauth_verifier", a)


def test_quickbooks_oauth2_callback_must_name_the_company(make_engine: Callable[..., Engine]) -> None:
    """Intuit's redirect always carries realmId (elements-api.md §3): without it, no company is known."""
    engine = make_engine()
    a, location = redirected(engine, flow="oauth2")
    assert_rejected(engine, with_params(location, realmId=None), "missing parameter(s) realmId", a)
    engine.handle_callback(location)  # the genuine one still applies
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED


def test_repeated_parameter(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert_rejected(engine, location + "&oauth_verifier=other", "more than once", a, stored=False)


def test_repeat_is_a_harmless_duplicate_and_a_different_second_callback_is_rejected(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    assert engine.handle_callback(location).status == "applied"
    assert engine.handle_callback(location).status == "duplicate"
    a = engine.get(a.id)
    assert_rejected(engine, with_params(location, oauth_verifier="replayed"), "already used", a)
    engine.run_until_idle()
    assert engine.get(a.id).state is State.PROVISIONED
    assert engine.handle_callback(location).status == "duplicate"
    statuses = [c.status for c in engine.repo.callbacks(a.id)]
    assert statuses == ["applied", "duplicate", "rejected", "duplicate"]


def test_deadline_expiry_and_late_callback(make_engine: Callable[..., Engine], clock: Any) -> None:
    engine = make_engine(clock=clock)
    a, location = redirected(engine, flow="oauth2", callback_wait_s=600)
    assert a.deadline_at == clock() + timedelta(seconds=600)
    clock.advance(599)
    assert engine.tick().claimed == 0
    clock.advance(1)
    report = engine.tick()
    assert report.count("failed") == 1
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "callback_timeout"
    assert_rejected(engine, location, "deadline passed", a)


def test_callback_before_redirect_commit_waits_in_the_inbox(make_engine: Callable[..., Engine], sandbox: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider can redirect before our REDIRECTED commit lands (slow commit, crash and retry)."""
    monkeypatch.setattr(StepPorts, "new_nonce", lambda self: "known-nonce-for-test-0123456789abcdef")
    engine = make_engine()
    a = engine.start("sfdc", "Early", flow="oauth2", **QBO)
    early = f"https://app.example.com/cb?code=early-code&state={a.id}.known-nonce-for-test-0123456789abcdef"
    assert engine.handle_callback(early).status == "pending"
    assert engine.get(a.id).state is State.NEW
    engine.run_until_idle()  # redirect commits, the pending callback is applied, then provision runs
    a = engine.get(a.id)
    assert [c.status for c in engine.repo.callbacks(a.id)] == ["applied"]
    # The sandbox never issued "early-code", so the create step fails permanently: proof it was used.
    assert a.state is State.FAILED and a.last_error and a.last_error["kind"] == "provider_rejected"


def test_early_callbacks_are_bounded_per_attempt(make_engine: Callable[..., Engine], sandbox: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the redirect commits no nonce is known: anyone who knows an attempt id could send
    early callbacks. A repeat is not stored twice, and past MAX_PENDING they are only counted."""
    monkeypatch.setattr(StepPorts, "new_nonce", lambda self: "known-nonce-for-test-0123456789abcdef")
    engine = make_engine()
    a = engine.start("sfdc", "Flooded", flow="oauth2", **QBO)
    forged = [f"https://app.example.com/cb?code=c{n}&state={a.id}.guess-{n}" for n in range(MAX_PENDING)]
    for url in forged:
        assert engine.handle_callback(url).status == "pending"
    assert engine.handle_callback(forged[0]).status == "pending"  # a repeat: no second row
    counted = sum(engine.callbacks.unmatched_counts().values())
    for n in range(20):
        with pytest.raises(CallbackRejectedError, match="too many callbacks"):
            engine.handle_callback(f"https://app.example.com/cb?code=x{n}&state={a.id}.guess-x{n}")
    assert len(engine.repo.callbacks(a.id)) == MAX_PENDING
    assert sum(engine.callbacks.unmatched_counts().values()) == counted + 20
    engine.run_until_idle()  # the redirect commits: the guesses are judged against its nonce
    assert engine.get(a.id).state is State.REDIRECTED
    assert {c.status for c in engine.repo.callbacks(a.id)} == {"rejected"}


def test_every_callback_is_recorded_with_secrets_sealed(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine)
    engine.handle_callback(location)
    verifier = dict(parse_qsl(urlsplit(location).query))["oauth_verifier"]
    [row] = engine.repo.callbacks(a.id)
    assert row.params and verifier.encode() not in row.params
    assert engine.repo.codec.open(row.params)["oauth_verifier"] == verifier


def test_pending_callback_is_rejected_when_its_attempt_fails_first(make_engine: Callable[..., Engine],
                                                                   sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("sfdc", "Early then failed", flow="oauth2", **QBO)
    assert (
        engine.handle_callback(f"https://app.example.com/cb?code=c&state={a.id}.whatever").status == "pending"
    )
    sandbox.set_faults(fails={"oauth_url": {"rate": 1.0, "status": 400}})
    engine.run_until_idle()
    assert engine.get(a.id).state is State.FAILED
    [row] = engine.repo.callbacks(a.id)
    assert row.status == "rejected" and "failed before its redirect" in (row.reason or "")

"""Chained steps (issue 6/6): a step that leads to a step due at once is followed by it under the
same claim, and both are committed as one write carrying both history rows.

In the OAuth1 flow NEW -> TOKEN_ISSUED is due at once, so a worker takes a new attempt to
REDIRECTED with one claim and one row update. What must hold: both history rows, the request
token kept even when the second step fails, a lost lease discarding both, and no chaining when
the lease has no time left.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from testkit import QBO, attempt_writes, consent

from engine import Engine, EngineSettings, RetryPolicy
from persistence.schema import attempts
from states import State

ONE_TRY = RetryPolicy(in_process_attempts=1, durable_initial=5, durable_max=60, budget=3)


def oauth1(engine: Engine, n: int) -> list[str]:
    return [engine.start("quickbooks", f"chain-{i}", flow="oauth1", **QBO).id for i in range(n)]


@pytest.mark.parametrize("window", [0.2, 0.0], ids=["group", "alone"])
def test_a_new_oauth1_attempt_reaches_redirected_with_one_claim(make_engine: Callable[..., Engine],
                                                                 sandbox: Any, window: float) -> None:
    engine = make_engine(settings=EngineSettings(commit_window_s=window))
    ids = oauth1(engine, 3)
    with attempt_writes(engine.repo.engines) as writes:
        report = engine.tick()
    assert [(r.outcome, r.source, r.dest, r.steps) for r in report.results] == [
        ("advanced", State.NEW, State.REDIRECTED, 2)] * 3
    assert report.steps == 6
    claims = [rows for kind, rows in writes if kind == "claim"]
    assert claims == [1] and sum(rows for kind, rows in writes if kind == "transition") == 3
    for attempt_id in ids:
        a = engine.get(attempt_id)
        assert (a.state, a.version, a.history_seq, a.runs, a.failures) == (State.REDIRECTED, 3, 2, 0, 0)
        assert a.lease_owner is None and a.request_token_hash and a.state_nonce_hash and a.deadline_at
        assert {"request_token", "request_token_secret", "redirect_url"} <= set(a.secrets)
        path = [(h.seq, h.trigger, h.source, h.dest, h.outcome) for h in engine.history(attempt_id)]
        assert path == [(1, "issue_token", "NEW", "TOKEN_ISSUED", "ok"),
                        (2, "redirect", "TOKEN_ISSUED", "REDIRECTED", "ok")]
    # The stored request token is the one in the consent URL: the callback is accepted.
    a = engine.get(ids[0])
    assert engine.handle_callback(consent(engine.redirect_url(a) or "")).status == "applied"
    engine.run_until_idle()
    assert engine.get(ids[0]).state is State.PROVISIONED


def test_a_failed_second_step_keeps_the_first(make_engine: Callable[..., Engine], sandbox: Any,
                                              clock: Any) -> None:
    engine = make_engine(clock=clock, policy=ONE_TRY)
    [attempt_id] = oauth1(engine, 1)
    sandbox.set_faults(fails={"oauth_url": {"rate": 1.0, "status": 503, "count": 1}})
    [result] = engine.tick().results
    assert (result.outcome, result.source, result.dest, result.steps) == ("retry", State.NEW, None, 2)
    a = engine.get(attempt_id)
    # The transition to TOKEN_ISSUED is kept, with its request token, and the redirect step is retried.
    assert (a.state, a.version, a.history_seq, a.runs, a.failures) == (State.TOKEN_ISSUED, 3, 1, 1, 1)
    assert a.last_error is not None and a.last_error["kind"] == "unavailable"
    assert a.request_token_hash and "request_token" in a.secrets and a.lease_owner is None
    assert [h.dest for h in engine.history(attempt_id)] == ["TOKEN_ISSUED"]
    assert a.next_run_at is not None and a.next_run_at > clock()
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(attempt_id)
    assert a.state is State.REDIRECTED
    assert [h.dest for h in engine.history(attempt_id)] == ["TOKEN_ISSUED", "REDIRECTED"]
    assert engine.history(attempt_id)[1].tries == 2  # the failed run and the one that succeeded
    # The request token was not fetched again.
    assert len([r for r in sandbox.requests() if r["endpoint"] == "oauth_token"]) == 1


def test_a_permanent_failure_of_the_second_step_records_both(make_engine: Callable[..., Engine],
                                                             sandbox: Any) -> None:
    engine = make_engine(policy=ONE_TRY)
    [attempt_id] = oauth1(engine, 1)
    sandbox.set_faults(fails={"oauth_url": {"rate": 1.0, "status": 404}})
    [result] = engine.tick().results
    assert (result.outcome, result.dest, result.steps) == ("failed", State.FAILED, 2)
    a = engine.get(attempt_id)
    assert a.state is State.FAILED and a.failure_reason and a.version == 3
    assert [(h.trigger, h.source, h.dest) for h in engine.history(attempt_id)] == [
        ("issue_token", "NEW", "TOKEN_ISSUED"), ("fail", "TOKEN_ISSUED", "FAILED")]


def test_a_lost_lease_discards_both_steps(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    ids = oauth1(engine, 2)
    now = engine.now()
    claimed = engine.repo.claim_due(now, engine.worker_id, now + timedelta(seconds=60), 10)
    steps = [engine.runner.prepare(a, may_chain=lambda: True) for a in claimed]
    assert all(s.before is not None and s.attempt.state is State.TOKEN_ISSUED for s in steps)
    with engine.repo.engine.begin() as conn:  # another worker took over the second attempt
        conn.execute(attempts.update().where(attempts.c.id == claimed[1].id).values(lease_owner="w2"))
    results = engine.runner.commit(steps)
    assert [(r.outcome, r.steps) for r in results] == [("advanced", 2), ("lost", 2)]
    kept, lost = engine.get(claimed[0].id), engine.get(claimed[1].id)
    assert kept.state is State.REDIRECTED and len(engine.history(kept.id)) == 2
    assert (lost.state, lost.version, lost.lease_owner) == (State.NEW, 1, "w2")
    assert engine.history(lost.id) == []
    assert sorted(ids) == sorted(a.id for a in claimed)


def test_no_chaining_without_time_left_on_the_lease(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    [attempt_id] = oauth1(engine, 1)
    now = engine.now()
    [claimed] = engine.repo.claim_due(now, engine.worker_id, now + timedelta(seconds=60), 10)
    step = engine.runner.prepare(claimed, may_chain=lambda: False)
    assert step.before is None and step.attempt.state is State.NEW
    [result] = engine.runner.commit([step])
    assert (result.outcome, result.dest, result.steps) == ("advanced", State.TOKEN_ISSUED, 1)
    assert [h.dest for h in engine.history(attempt_id)] == ["TOKEN_ISSUED"]
    assert len([r for r in sandbox.requests() if r["endpoint"] == "oauth_url"]) == 0


def test_steps_that_are_not_due_at_once_are_not_chained(make_engine: Callable[..., Engine],
                                                         sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "chain-oauth2", flow="oauth2", **QBO)
    [result] = engine.tick().results
    assert (result.dest, result.steps) == (State.REDIRECTED, 1)  # REDIRECTED waits for the user
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    [result] = engine.tick().results
    assert (result.dest, result.steps) == (State.PROVISIONED, 1)  # renewal is due hours later


def test_a_chained_step_too_late_for_its_first_call_leaves_the_first_step_alone(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    """``in_time`` turns false between the steps (as after a database wait): the chained step sends
    nothing and is not committed; the first step is, and the redirect step stays due at once."""
    engine = make_engine()
    [attempt_id] = oauth1(engine, 1)
    now = engine.now()
    [claimed] = engine.repo.claim_due(now, engine.worker_id, now + timedelta(seconds=60), 10)
    answers = iter([True, True])  # the first step's first call, then may_chain; then too late

    def in_time() -> bool:
        return next(answers, False)

    step = engine.runner.prepare(claimed, may_chain=in_time, in_time=in_time)
    assert step.before is None and step.attempt.state is State.NEW and not step.released
    [result] = engine.runner.commit([step])
    assert (result.outcome, result.dest, result.steps) == ("advanced", State.TOKEN_ISSUED, 1)
    assert len([r for r in sandbox.requests() if r["endpoint"] == "oauth_url"]) == 0
    a = engine.get(attempt_id)
    assert a.state is State.TOKEN_ISSUED and a.lease_owner is None and a.next_run_at is not None

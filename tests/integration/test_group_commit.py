"""Group commit (issue 6/6): the steps of one tick are written in one transaction, lost guards are
discarded one by one, and a step that could outlive its lease is not started."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import QBO, attempt_writes

from engine import Engine, EngineSettings, RetryPolicy
from persistence.schema import attempts, history
from persistence.writes import transition_write
from states import State
from states.attempt import HistoryEntry


def start(engine: Engine, n: int) -> list[str]:
    return [engine.start("quickbooks", f"group-{i}", flow="oauth1", **QBO).id for i in range(n)]


def test_one_tick_writes_its_steps_with_one_statement(make_engine: Callable[..., Engine]) -> None:
    # The window is wall time (a throughput knob, not a schedule): 5 s instead of the default 0.2 s
    # so that eight steps on a loaded CI machine still finish inside one window.
    engine = make_engine(settings=EngineSettings(commit_window_s=5))
    ids = start(engine, 8)
    with attempt_writes(engine.repo.engines) as writes:
        report = engine.tick()
    assert [r.outcome for r in report.results] == ["advanced"] * 8
    assert [rows for kind, rows in writes if kind == "transition"] == [
        8
    ]  # all eight writes in one executemany, in one transaction
    for attempt_id in ids:  # each write carries two chained steps (tests/test_chained_steps.py)
        assert engine.get(attempt_id).state is State.REDIRECTED
        assert [h.dest for h in engine.history(attempt_id)] == ["TOKEN_ISSUED", "REDIRECTED"]


def test_a_zero_window_commits_every_step_alone(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(settings=EngineSettings(commit_window_s=0))
    start(engine, 4)
    with attempt_writes(engine.repo.engines) as writes:
        report = engine.tick()
    assert [r.outcome for r in report.results] == ["advanced"] * 4
    assert [rows for kind, rows in writes if kind == "transition"] == [1, 1, 1, 1]


def test_a_lost_guard_discards_only_that_write(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    ids = start(engine, 3)
    repo = engine.repo
    now = engine.now()
    claimed = repo.claim_due(now, "w1", now + timedelta(seconds=60), 10)
    assert sorted(a.id for a in claimed) == sorted(ids)
    with repo.engine.begin() as conn:  # another worker took over the second attempt
        conn.execute(attempts.update().where(attempts.c.id == claimed[1].id).values(lease_owner="w2"))
    writes = [
        transition_write(
            a,
            HistoryEntry(a.id, 1, "issue_token", "NEW", "TOKEN_ISSUED", now, 1, "w1", "ok", 1, None, None),
            owner="w1",
            now=now,
            next_run_at=now,
        )
        for a in claimed
    ]
    assert repo.apply_many(writes) == [True, False, True]
    states = {a.id: a.state for a in (repo.get(i) for i in ids) if a}
    assert states == {
        claimed[0].id: State.TOKEN_ISSUED,
        claimed[1].id: State.NEW,
        claimed[2].id: State.TOKEN_ISSUED,
    }
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.select(history.c.attempt_id)).scalars().all()
    assert sorted(rows) == sorted([claimed[0].id, claimed[2].id])
    assert repo.get(claimed[1].id).lease_owner == "w2"  # type: ignore[union-attr]


@pytest.mark.realtime
def test_a_step_that_could_outlive_its_lease_is_released(
    make_engine: Callable[..., Engine], sandbox: Any
) -> None:
    # Longest step: 1 try x (0.2 s connect + 0.3 s read) + 0.2 s commit window = 0.7 s of a 1 s lease.
    engine = make_engine(settings=EngineSettings(lease_s=1.0, commit_window_s=0.2),
                         policy=RetryPolicy(in_process_attempts=1), connect_timeout=0.2, read_timeout=0.3)
    ids = start(engine, 3)
    sandbox.set_faults(delays={"oauth_token": 0.2})
    report = engine.tick()
    # The third step would start 0.4 s into the lease: 0.4 + 0.7 >= 1, so it is handed back unstarted.
    assert [r.outcome for r in report.results] == ["advanced", "advanced", "released"]
    released = engine.get(report.results[2].attempt_id)
    assert released.state is State.NEW and released.lease_owner is None and released.next_run_at is not None
    assert len([r for r in sandbox.requests() if r["endpoint"] == "oauth_token"]) == 2
    sandbox.set_faults()
    engine.run_until_idle()
    assert {engine.get(i).state for i in ids} == {State.REDIRECTED}


def test_a_release_that_finds_the_lease_taken_reports_lost(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    [attempt_id] = start(engine, 1)
    now = engine.now()
    [claimed] = engine.repo.claim_due(now, engine.worker_id, now + timedelta(seconds=60), 10)
    with engine.repo.engine.begin() as conn:  # our lease expired and another worker took the attempt
        conn.execute(attempts.update().where(attempts.c.id == attempt_id).values(lease_owner="w2"))
    result = engine.runner.release(claimed)
    assert (result.outcome, result.steps) == ("lost", 0)
    assert engine.get(attempt_id).lease_owner == "w2"  # the other worker's lease is untouched

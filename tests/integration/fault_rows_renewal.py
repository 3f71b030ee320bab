"""Test helper, not a test: the fault catalogue's rows about renewals and rotated tokens.

Each row injects its fault, runs the engine until it is idle and returns its ``Tally``
(``fault_audit``); the test module that covers the fault in depth is named in each docstring.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from integration.fault_audit import Kit, Tally, audit, quick
from integration.test_pg_disk_full import renew_through_a_full_wal_disk
from integration.test_quarantine import plant_foreign_row
from integration.test_token_spool import (
    after_the_provider,
    assert_all_renew_again,
    assert_renews_again,
    busy_engine,
    provision,
    provision_oauth1,
    renew_all,
    renew_on_a_full_disk,
    renew_under_an_exclusive_lock,
    tmpfs,
)
from integration.test_worker_survives import db_now, terminate_backends
from testkit import QBO, consent

import states.renewal
from engine import EngineSettings
from persistence.quarantine import UNREADABLE


def sqlite_locked_at_the_renewal_commit(kit: Kit) -> Tally:
    """Another connection holds an EXCLUSIVE lock past the 0.2 s busy timeout while two renewals
    that ran in parallel commit; spooled, drained, renewed again (``test_token_spool.py``)."""
    db_file, spool, sim = kit.tmp_path / "locked.db", kit.tmp_path / "spool", kit.clocked
    engine = busy_engine(db_file, sim, kit.clock, kit.waits, spool, concurrency=2)
    try:
        before = renew_under_an_exclusive_lock(engine, sim, kit.clock, db_file, spool, 2)
        assert_all_renew_again(engine, sim, {i: n + 1 for i, n in before.items()}, kit.clock)
        return audit(engine, sim, list(before))
    finally:
        engine.close()


def pg_sessions_terminated_at_the_renewal_commit(kit: Kit) -> Tally:
    """The engine's PostgreSQL sessions terminated right after each of two provider rotations
    (as a restart would): the commit is retried (``test_token_spool.py``)."""
    url, sim = kit.db_url, kit.clocked
    since = db_now(url)
    engine = kit.engine_on(url, clock=kit.clock, sim=sim,
                           settings=EngineSettings(spool_dir=str(kit.tmp_path / "spool")))
    before = {a.id: a.renewals for a in (provision(engine) for _ in range(2))}

    def restart() -> None:
        assert terminate_backends(url, since) >= 1

    after_the_provider(engine, restart, times=2)
    renew_all(engine, list(before), kit.clock)
    assert kit.waits.count(0.5) == 2  # each renewal's commit failed once and was retried
    assert_all_renew_again(engine, sim, {i: n + 1 for i, n in before.items()}, kit.clock)
    return audit(engine, sim, list(before))


def sqlite_disk_full_at_the_renewal_commit(kit: Kit) -> Tally:
    """The real 4 MB tmpfs under the SQLite file fills right after the provider rotated: retried,
    spooled, drained once space is back, renewed again (``test_token_spool.py``; root only)."""
    disk, spool, sim = kit.tmp_path / "small", kit.tmp_path / "spool", kit.clocked
    disk.mkdir()
    with tmpfs(disk):
        engine = kit.engine_on(f"sqlite:///{disk}/provision.db", clock=kit.clock, sim=sim,
                               settings=EngineSettings(spool_dir=str(spool)))
        try:
            a = provision(engine)
            renew_on_a_full_disk(engine, disk, spool, kit.clock, kit.waits, a)
            assert_renews_again(engine, sim, a.id, kit.clock, renewals=a.renewals + 1)
            return audit(engine, sim, [a.id])
        finally:
            engine.close()  # before the tmpfs goes


def full_wal_disk_at_the_renewal_commit(kit: Kit) -> Tally:
    """A private PostgreSQL's WAL disk (a real 8 MB tmpfs) fills right after the provider rotated:
    the renewal's COMMIT fails with DiskFull and the server PANICs and stays down; the token is
    spooled, drained once space is back, and renewed again (``test_pg_disk_full.py``)."""
    pg, url = (kit.request.getfixturevalue(name) for name in ("wal_disk_pg", "wal_disk_url"))
    sim, spool = kit.clocked, kit.tmp_path / "spool"
    engine = kit.engine_on(url, clock=kit.clock, sim=sim,
                           settings=EngineSettings(spool_dir=str(spool), poll_max_s=0.2))
    a = provision(engine)
    renew_through_a_full_wal_disk(engine, pg, spool, kit.clock, a)
    assert_renews_again(engine, sim, a.id, kit.clock, renewals=a.renewals + 1)
    return audit(engine, sim, [a.id])


def odd_token_answers(kit: Kit) -> Tally:
    """Token answers that drift after the provider rotated: ``"expires_in": "3600.0"``, no access
    token, an odd refresh lifetime, Reconnect ``ErrorCode`` ``"0.0"`` (sandbox ``patch`` fault)."""
    sim = kit.clocked
    engine = kit.engine_on(kit.db_url, clock=kit.clock, sim=sim)
    sim.faults.replace(patches={"provider_token": {
        "expires_in": "3600.0", "x_refresh_token_expires_in": "soon", "access_token": None,
        "ErrorCode": "0.0"}})
    ids: list[str] = []
    # OAuth1 first: its renewals are 151 days apart, longer than an idle OAuth2 refresh token lives.
    for make in (provision_oauth1, provision):
        made = [make(engine).id for _ in range(2)]
        renew_all(engine, made, kit.clock)  # under the odd answers
        assert_all_renew_again(engine, sim, {i: engine.get(i).renewals for i in made}, kit.clock)
        ids += made
    return audit(engine, sim, ids)


def exception_after_the_provider_answered(kit: Kit) -> Tally:
    """The renewal step raises after the provider rotated: the runner stores the token first."""
    sim = kit.clocked
    engine = kit.engine_on(kit.db_url, clock=kit.clock, sim=sim)
    attempts = [provision(engine), provision(engine)]
    real = states.renewal.renewed

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("after the provider answered")

    kit.request.getfixturevalue("monkeypatch").setattr(states.renewal, "renewed", broken)
    due = max(a.next_run_at for a in attempts if a.next_run_at is not None)
    kit.clock.now = due
    engine.run_until_idle()
    assert all(engine.history(a.id)[-1].note == "renewal kept after ValueError" for a in attempts)
    states.renewal.renewed = real
    assert_all_renew_again(engine, sim, {a.id: a.renewals + 1 for a in attempts}, kit.clock)
    return audit(engine, sim, [a.id for a in attempts])


def unreadable_row_among_good_ones(kit: Kit) -> Tally:
    """A row sealed under a key the engine does not hold, among ten good ones: quarantined, the
    rest runs (``test_quarantine.py``). The quarantined row counts as lost if it is gone or not
    marked, as stuck if it is still leased or due."""
    engine = kit.engine_on(kit.db_url)
    good = quick(engine, 5, "Good")
    bad = plant_foreign_row(engine)
    good += quick(engine, 5, "Good late")
    engine.run_until_idle()
    tally = audit(engine, kit.sandbox, good)
    row = {a.id: a for a in engine.list()}.get(bad)
    lost = row is None or not row.last_error or row.last_error.get("kind") != UNREADABLE
    stuck = row is not None and (row.lease_owner is not None or row.next_run_at is not None)
    return tally + Tally(1, int(lost), 0, int(stuck))


def overdue_renewal_after_an_outage(kit: Kit) -> Tally:
    """Workers down for 5 days past two renewals, then the provider answers 503 for 6 hours: the
    renewals get their retries and succeed (``test_renewal_budget.py``)."""
    sim = kit.clocked
    engine = kit.engine_on(kit.db_url, clock=kit.clock, sim=sim)
    attempts = [provision(engine), provision(engine)]
    sim.set_faults(fails={"provider_token": {"rate": 1.0, "status": 503}})
    kit.clock.now = max(a.next_run_at for a in attempts if a.next_run_at) + timedelta(days=5)
    end = kit.clock() + timedelta(hours=6)
    while kit.clock() < end:
        engine.run_until_idle()
        due = [engine.get(a.id).next_run_at for a in attempts]
        kit.clock.now = max(kit.clock(), min(d for d in due if d is not None))
    assert all(engine.get(a.id).renewal_failing_since is not None for a in attempts)
    sim.set_faults()
    assert_all_renew_again(engine, sim, {a.id: a.renewals for a in attempts}, kit.clock)
    return audit(engine, sim, [a.id for a in attempts])


def lost_lease_during_renewal(kit: Kit) -> Tally:
    """Worker A renews but commits after its lease ran out and worker B presented the old token;
    A's renewal is kept as a complete renewal (``test_renewal_lost_lease.py``), OAuth1 and OAuth2."""
    sim = kit.clocked
    first, second = (kit.engine_on(kit.db_url, clock=kit.clock, sim=sim) for _ in range(2))
    ids = []
    for flow in ("oauth1", "oauth2"):
        a = first.start("quickbooks", f"Lost lease {flow}", flow=flow, renewal="engine", **QBO)
        first.run_until_idle()
        first.handle_callback(consent(first.redirect_url(first.get(a.id)) or ""))
        first.run_until_idle()
        a = first.get(a.id)
        assert a.next_run_at is not None
        kit.clock.now = a.next_run_at
        lease_s = first.settings.lease_s
        [claimed] = first.repo.claim_due(kit.clock(), first.worker_id,
                                         kit.clock() + timedelta(seconds=lease_s), 10)
        step = first.runner.prepare(claimed)  # the provider rotated; not committed yet
        kit.clock.advance(lease_s + 1)
        second.tick()  # B takes over and presents the spent token: rejected, to be confirmed
        [result] = first.runner.commit([step])
        assert result.outcome == "lost"
        second.run_until_idle()  # the push
        kit.clock.advance(120)  # past B's confirmation: nothing renews or fails
        second.run_until_idle()
        ids.append(a.id)
    return audit(first, sim, ids)

"""History retention (issue 19): old renewal rows become daily summaries; nothing else changes.

Three attempts with 200 days of hourly renewals each are loaded through the repository and SQL
(a fake clock sets every time), then pruned to 90 days on SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import TEST_KEY

from engine import FakeClock
from engine.cli.main import main as cli_main
from engine.clock import utcnow
from engine.inspection.paths import trace_path
from engine.wiring import open_repository
from persistence.outbox import Outbox
from persistence.repository import Repository
from persistence.retention import (
    HistoryPruner,
    RetentionSchedule,
    renewals_in,
    retention_cutoff,
)
from persistence.schema import history
from states.attempt import Attempt
from states.model import Flow, State

DAYS = 200
ATTEMPTS = 3
FLOW = [("issue_token", "NEW", "TOKEN_ISSUED"), ("redirect", "TOKEN_ISSUED", "REDIRECTED"),
        ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED"),
        ("provision", "CALLBACK_RECEIVED", "PROVISIONED")]


def _row(attempt_id: str, seq: int, trigger: str, source: str, dest: str, at: datetime,
         **kw: Any) -> dict[str, Any]:
    return {"attempt_id": attempt_id, "seq": seq, "trigger": trigger, "source": source, "dest": dest,
            "at": at, "duration_ms": kw.get("duration_ms", 5), "worker": "w1", "outcome": "ok",
            "tries": kw.get("tries", 1), "error": None, "note": kw.get("note")}


def load(repo: Repository, clock: FakeClock) -> dict[str, list[dict[str, Any]]]:
    """ATTEMPTS provisioned attempts, DAYS days of hourly renewals each; one more transition
    (a failed then restarted renewal, as an operator would leave) in the middle of attempt 0's."""
    start = clock()
    rows: dict[str, list[dict[str, Any]]] = {}
    for n in range(ATTEMPTS):
        attempt = Attempt(id=f"att-{n}", element_key="quickbooks", flow=Flow.OAUTH2, name=f"company {n}",
                          state=State.PROVISIONED, version=1, created_at=start, updated_at=start,
                          next_run_at=start + timedelta(days=DAYS), secrets={"user_tokens": {}})
        repo.insert_attempt(attempt)
        mine = [_row(attempt.id, i + 1, t, s, d, start + timedelta(minutes=i))
                for i, (t, s, d) in enumerate(FLOW)]
        for hour in range(1, DAYS * 24):
            at = start + timedelta(hours=hour, minutes=n)
            if n == 0 and hour == 30 * 24 + 5:
                mine.append(_row(attempt.id, len(mine) + 1, "fail", "PROVISIONED", "FAILED", at,
                                 note="renewal_rejected"))
                mine.append(_row(attempt.id, len(mine) + 1, "reauthorize", "FAILED", "PROVISIONED", at))
                continue
            mine.append(_row(attempt.id, len(mine) + 1, "renew", "PROVISIONED", "PROVISIONED", at,
                             tries=1 + hour % 3, duration_ms=hour % 7, note="refresh-token grant"))
        rows[attempt.id] = mine
    with repo.engine.begin() as conn:
        conn.execute(history.insert(), [r for mine in rows.values() for r in mine])
    clock.advance(days=DAYS)
    return rows


@pytest.fixture
def repo(db_url: str) -> Iterator[Repository]:
    """A migrated repository on each backend."""
    r = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        yield r
    finally:
        r.engine.dispose()


def table(repo: Repository) -> list[tuple[Any, ...]]:
    """Every history row, in key order (to compare before and after)."""
    with repo.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(history).order_by(history.c.attempt_id,
                                                                               history.c.seq))]


def expected_days(rows: list[dict[str, Any]], cutoff: datetime) -> dict[date, list[dict[str, Any]]]:
    days: dict[date, list[dict[str, Any]]] = {}
    for r in rows:
        if r["trigger"] == "renew" and r["at"] < cutoff:
            days.setdefault(r["at"].date(), []).append(r)
    return days


@pytest.mark.parametrize("batch", [(500, 5000), (2, 50)], ids=["large-batches", "days-split-across-pages"])
def test_prune_keeps_transitions_and_summarises_renewal_days(repo: Repository,
                                                             batch: tuple[int, int]) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    loaded = load(repo, clock)
    cutoff = retention_cutoff(clock(), timedelta(days=90))
    assert cutoff == datetime(2026, 4, 21, tzinfo=timezone.utc)  # 200 - 90 days after Jan 1, midnight
    pruner = HistoryPruner(repo.engine, batch_attempts=batch[0], batch_rows=batch[1])
    before = table(repo)

    dry = pruner.prune(cutoff, dry_run=True)
    assert table(repo) == before  # a dry run writes nothing
    report = pruner.prune(cutoff)

    folded = sum(len(rows) for mine in loaded.values() for rows in expected_days(mine, cutoff).values())
    summaries = sum(len(expected_days(mine, cutoff)) for mine in loaded.values())
    assert (report.renewal_rows, report.summaries, report.attempts) == (folded, summaries, ATTEMPTS)
    assert (dry.renewal_rows, dry.summaries, dry.attempts) == (folded, summaries, ATTEMPTS)
    assert summaries == ATTEMPTS * 110  # Jan 1 to Apr 20: 110 days of renewals for each attempt
    assert len(table(repo)) == len(before) - folded + summaries

    for attempt_id, mine in loaded.items():
        kept = repo.history(attempt_id)
        seqs = [h.seq for h in kept]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [h.at for h in kept] == sorted(h.at for h in kept)  # seq order is still time order
        # Every non-renewal transition and every renewal after the cutoff is kept untouched.
        untouched = [r for r in mine if r["trigger"] != "renew" or r["at"] >= cutoff]
        assert [(h.seq, h.trigger, h.at, h.note) for h in kept if h.outcome != "summary"] == [
            (r["seq"], r["trigger"], r["at"], r["note"]) for r in untouched]
        # One summary per day before the cutoff: first seq and time of the day, counts and sums.
        days = expected_days(mine, cutoff)
        got = [h for h in kept if h.outcome == "summary"]
        assert [(h.seq, h.at, h.trigger, h.source, h.dest) for h in got] == [
            (d[0]["seq"], d[0]["at"], "renew", "PROVISIONED", "PROVISIONED") for d in days.values()]
        for h, day in zip(got, days.values(), strict=True):
            assert h.note == f"daily summary: {len(day)} renewal{'s' if len(day) != 1 else ''}"
            assert renewals_in(h.trigger, h.outcome, h.note) == len(day)
            sums = (sum(r["tries"] for r in day), sum(r["duration_ms"] for r in day))
            assert (h.tries, h.duration_ms) == sums
        # The timeline still counts every renewal.
        renewals = sum(1 for r in mine if r["trigger"] == "renew")
        assert sum(renewals_in(h.trigger, h.outcome, h.note) for h in kept) == renewals

    after = table(repo)
    again = pruner.prune(cutoff)
    assert (again.renewal_rows, again.summaries, again.pages) == (0, 0, 0)
    assert table(repo) == after  # a second prune changes nothing


def test_prune_writes_no_event_and_takes_the_folded_rows_events_with_them(repo: Repository) -> None:
    """A summary is not a transition: the feed (and so the webhooks) gets no new event from a prune,
    and the events of the renewal rows it folds leave the table with them (migration 0013)."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    load(repo, clock)
    outbox = Outbox(repo.engine)
    last = outbox.last_seq()
    with repo.engine.connect() as conn:
        count = "SELECT count(*) FROM events"
        before = conn.exec_driver_sql(count).scalar_one()
    assert before == last == len(table(repo))  # one event per history row
    report = HistoryPruner(repo.engine).prune(retention_cutoff(clock(), timedelta(days=90)))
    assert outbox.read(last, 1000) == [] and outbox.last_seq() == last
    with repo.engine.connect() as conn:
        after = conn.exec_driver_sql(count).scalar_one()
        orphans = conn.exec_driver_sql(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM history h "
            "WHERE h.attempt_id = e.attempt_id AND h.seq = e.history_seq)").scalar_one()
    assert after == before - report.renewal_rows and orphans == 0
    # Every event left is a history row the feed still shows; a summary's seq had its first
    # renewal's event, which went with that row.
    assert len(outbox.read(0, 10_000)) == after == len(table(repo)) - report.summaries


def test_a_prune_of_the_newest_events_never_lets_a_position_be_handed_out_again(repo: Repository) -> None:
    """A reader resumes after the last position it saw. When a prune takes the newest events with
    it (a service idle for longer than the retention, pruned before anything else happened), the
    next event must still come after that position, or the reader would skip it."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    loaded = load(repo, clock)
    outbox = Outbox(repo.engine)
    cursor = outbox.last_seq()
    HistoryPruner(repo.engine).prune(retention_cutoff(clock(), timedelta(0)))  # every renewal folded
    assert outbox.last_seq() < cursor  # the newest events went with their rows
    after_all = len(loaded["att-0"]) + 1
    with repo.engine.begin() as conn:
        conn.execute(history.insert(), _row("att-0", after_all, "fail", "PROVISIONED", "FAILED", clock(),
                                            note="renewal_rejected"))
    fresh = outbox.read(cursor, 10)
    assert [(e.attempt_id, e.history_seq) for e in fresh] == [("att-0", after_all)]
    assert fresh[0].seq > cursor


def test_a_later_cutoff_merges_into_the_existing_summaries(repo: Repository) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    loaded = load(repo, clock)
    pruner = HistoryPruner(repo.engine, batch_rows=100)
    pruner.prune(retention_cutoff(clock(), timedelta(days=150)))
    # Rows of an already summarised day that were not folded (a late writer): fold them in.
    late = _row("att-1", 100_000, "renew", "PROVISIONED", "PROVISIONED",
                datetime(2026, 1, 10, 23, 59, tzinfo=timezone.utc), tries=2)
    with repo.engine.begin() as conn:
        conn.execute(history.insert(), [late])
    report = pruner.prune(retention_cutoff(clock(), timedelta(days=90)))
    assert report.renewal_rows > 0
    summary = [h for h in repo.history("att-1") if h.at.date() == date(2026, 1, 10)]
    assert len(summary) == 1 and summary[0].note == "daily summary: 25 renewals"
    renewals = sum(1 for r in loaded["att-1"] if r["trigger"] == "renew") + 1
    assert sum(renewals_in(h.trigger, h.outcome, h.note) for h in repo.history("att-1")) == renewals


def test_the_diagram_counts_the_renewals_of_summary_rows(repo: Repository) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    loaded = load(repo, clock)
    HistoryPruner(repo.engine).prune(retention_cutoff(clock(), timedelta(days=90)))
    attempt = repo.get("att-1")
    assert attempt is not None
    view = trace_path(attempt, repo.history("att-1"))
    renewals = sum(1 for r in loaded["att-1"] if r["trigger"] == "renew")
    label = view.label("PROVISIONED", "PROVISIONED", "\n") or ""
    assert f"renew ×{renewals}" in label
    assert label.splitlines()[0].startswith("5-")  # one run of renewals, not one number per summary


def test_the_schedule_prunes_at_most_once_an_hour(repo: Repository) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    load(repo, clock)
    schedule = RetentionSchedule(HistoryPruner(repo.engine), 90, clock)
    first = schedule.maybe_run()
    assert first is not None and first.renewal_rows > 0
    clock.advance(minutes=59)
    assert schedule.maybe_run() is None
    clock.advance(minutes=1)
    assert schedule.maybe_run() is None  # an hour later, same cutoff: already done, no table read
    clock.advance(days=1)
    next_day = schedule.maybe_run()
    assert next_day is not None and next_day.renewal_rows == ATTEMPTS * 24
    off = RetentionSchedule(HistoryPruner(repo.engine), 0, clock)
    assert not off.enabled and off.maybe_run() is None


def test_cli_prune_prints_what_it_did(sqlite_url: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    # Loaded relative to the real clock, which the command uses.
    loaded = load(repo, FakeClock(utcnow() - timedelta(days=DAYS)))
    repo.engine.dispose()
    cutoff = retention_cutoff(utcnow(), timedelta(days=90))
    folded = sum(len(rows) for mine in loaded.values() for rows in expected_days(mine, cutoff).values())

    assert cli_main(["prune", "--history-older-than", "90d", "--dry-run", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert f"would fold {folded:,} renewal rows" in out and "dry run" in out
    assert cli_main(["prune", "--history-older-than", "90d", "--json", "--db", sqlite_url]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["renewal_rows"] == folded and result["dry_run"] is False
    assert result["rows_removed"] == folded - result["summaries"]
    assert cli_main(["prune", "--history-older-than", "90d", "--db", sqlite_url]) == 0
    assert "folded 0 renewal rows" in capsys.readouterr().out


def test_cli_prune_needs_an_age(sqlite_url: str, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVISION_HISTORY_RETENTION_DAYS", raising=False)
    assert cli_main(["prune", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "--history-older-than" in err and "PROVISION_HISTORY_RETENTION_DAYS" in err
    assert cli_main(["prune", "--history-older-than", "12h", "--db", sqlite_url]) == 2
    assert "whole days" in capsys.readouterr().err



def renewal_total(repo: Repository) -> int:
    """The renewals the whole history stands for (summaries count N)."""
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.select(history.c.trigger, history.c.outcome, history.c.note))
        return sum(renewals_in(r.trigger, r.outcome, r.note) for r in rows)


def summary_rows(repo: Repository) -> int:
    """How many daily summary rows the history holds."""
    with repo.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(history.c.outcome == "summary")
        return int(conn.execute(query).scalar_one())


def test_a_crash_mid_prune_loses_nothing_and_a_rerun_finishes(repo: Repository,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    load(repo, clock)
    cutoff = retention_cutoff(clock(), timedelta(days=90))
    total = renewal_total(repo)
    import persistence.retention as retention

    real_merge, calls = retention._merge, []

    def dying_merge(rows: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 300:  # in the middle of the third page of 100-odd days
            raise RuntimeError("worker killed")
        return real_merge(rows)

    monkeypatch.setattr(retention, "_merge", dying_merge)
    pruner = HistoryPruner(repo.engine, batch_rows=2000)
    with pytest.raises(RuntimeError):
        pruner.prune(cutoff)
    assert renewal_total(repo) == total  # the page in flight was rolled back whole
    monkeypatch.setattr(retention, "_merge", real_merge)
    pruner.prune(cutoff)
    assert renewal_total(repo) == total
    assert summary_rows(repo) == ATTEMPTS * 110


@pytest.mark.postgres
def test_two_pruners_at_once_do_not_double_count(pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = open_repository(pg_schema_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        load(repo, clock)
        cutoff = retention_cutoff(clock(), timedelta(days=90))
        total = renewal_total(repo)
        other = HistoryPruner(repo.engine)
        mine = HistoryPruner(repo.engine)
        real_fold = HistoryPruner._fold_page

        def fold_after_the_other(self: HistoryPruner, conn: sa.Connection, raw: Any, cut: datetime) -> Any:
            if self is mine and not getattr(self, "raced", False):
                self.raced = True  # type: ignore[attr-defined]
                other.prune(cut)  # commits first, between our read and our delete
            return real_fold(self, conn, raw, cut)

        monkeypatch.setattr(HistoryPruner, "_fold_page", fold_after_the_other)
        report = mine.prune(cutoff)
        assert report.conflicts == 1 and report.renewal_rows == 0
        assert renewal_total(repo) == total
        assert summary_rows(repo) == ATTEMPTS * 110
    finally:
        repo.engine.dispose()


def test_the_worker_command_prunes_from_a_thread_when_the_setting_is_on(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from engine.cli.prune import start_retention

    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    loaded = load(repo, FakeClock(utcnow() - timedelta(days=DAYS)))
    cutoff = retention_cutoff(utcnow(), timedelta(days=90))
    expected = sum(len(expected_days(mine, cutoff)) for mine in loaded.values())
    stop = threading.Event()
    monkeypatch.setenv("PROVISION_HISTORY_RETENTION_DAYS", "0")
    assert start_retention(sqlite_url, stop) is None  # off: no thread
    monkeypatch.setenv("PROVISION_HISTORY_RETENTION_DAYS", "90")
    try:
        assert start_retention(sqlite_url, stop) is not None
        deadline = time.monotonic() + 30  # the thread's first run starts at once; this bounds a hang
        while summary_rows(repo) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert summary_rows(repo) == expected
    finally:
        stop.set()
        repo.engine.dispose()


def test_a_dry_run_reads_without_the_sqlite_write_lock(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        load(repo, clock)
        with repo.engine.begin() as writer:  # a worker's transaction holds the write lock meanwhile
            writer.execute(history.update().where(history.c.seq == -1).values(note="x"))
            report = HistoryPruner(repo.engine).prune(retention_cutoff(clock(), timedelta(days=90)),
                                                       dry_run=True)
        assert report.renewal_rows > 0
    finally:
        repo.engine.dispose()

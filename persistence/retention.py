"""History retention: old renewal rows become one daily summary per attempt and day (issue 19).

An hourly OAuth2 renewal writes a ``PROVISIONED --renew--> PROVISIONED`` history row: 8,760 rows per
connection and year. Retention keeps every other transition as it is and, for each attempt and UTC
day wholly older than the cutoff, replaces that day's renewal rows with ONE row:

- ``trigger`` ``renew``, ``source``/``dest`` ``PROVISIONED`` (the diagram still draws the self-loop);
- ``outcome`` ``summary`` and ``note`` ``daily summary: N renewals`` (``renewals_in`` reads N back);
- ``seq`` and ``at`` of the day's first renewal, ``tries`` and ``duration_ms`` summed.

The summary keeps the smallest ``seq`` of the rows it replaces, so ordering by ``seq`` still gives
the timeline in order (later rows of the attempt keep their numbers; gaps are fine for readers).

Work goes in batches of attempts (keyset over ``attempts.id``) and pages of at most ``batch_rows``
renewal rows; each page is ONE transaction that reads the rows, deletes exactly them (the delete's
row count must match, or another pruner got there first and the page is rolled back) and writes
the summaries. A day split across pages, or summarised before, is merged into its existing summary
(its N added, not counted twice). So a crash loses at most the page in flight, and a second run
changes nothing. Renewals write rows with ``at`` = now, far after the cutoff, so steps running
meanwhile never touch the rows a page works on.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from persistence.database import AUTOCOMMIT_OPTIONS
from persistence.schema import attempts, events, history

RENEW = "renew"
PROVISIONED = "PROVISIONED"
SUMMARY_OUTCOME = "summary"
_SUMMARY_NOTE = re.compile(r"^daily summary: (\d+) renewals?$")
# Literal, not a bound parameter: the partial index ix_history_renewals (migration 0004) is used
# only when the query repeats its predicate (SQLite matches the terms; PostgreSQL proves it).
_IS_RENEWAL = history.c.trigger == sa.literal_column(f"'{RENEW}'")
_DELETE_CHUNK = 400  # (attempt_id, seq) pairs per DELETE: 800 bound parameters, under SQLite's 999


def summary_note(count: int) -> str:
    """The note of a summary row of ``count`` renewals."""
    return f"daily summary: {count} renewal{'s' if count != 1 else ''}"


def renewals_in(trigger: str, outcome: str, note: str | None) -> int:
    """How many renewals one history row stands for: N for a daily summary, else 1 (0 if not a renewal)."""
    if trigger != RENEW:
        return 0
    match = _SUMMARY_NOTE.match(note or "") if outcome == SUMMARY_OUTCOME else None
    return int(match.group(1)) if match else 1


def retention_cutoff(now: datetime, keep: timedelta) -> datetime:
    """``now - keep`` rounded down to a UTC midnight: only whole days are summarised."""
    moment = (now - keep).astimezone(timezone.utc)
    return datetime.combine(moment.date(), time(0), tzinfo=timezone.utc)


@dataclass
class PruneReport:
    """What one prune did (or, with ``dry_run``, would do)."""

    cutoff: datetime
    dry_run: bool
    renewal_rows: int = 0  # raw renewal rows folded into summaries (and deleted)
    summaries: int = 0  # summary rows added (a day merged into an existing summary adds none)
    attempts: int = 0  # attempts that had renewal rows to fold
    pages: int = 0  # transactions (or, dry, reads) with rows in them
    conflicts: int = 0  # pages rolled back because another pruner changed them first

    @property
    def rows_removed(self) -> int:
        """How many fewer history rows there are afterwards."""
        return self.renewal_rows - self.summaries

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {**asdict(self), "cutoff": self.cutoff.isoformat(), "rows_removed": self.rows_removed}


@dataclass(frozen=True)
class _Row:
    attempt_id: str
    seq: int
    at: datetime
    duration_ms: int | None
    tries: int
    count: int  # renewals this row stands for

    @property
    def day(self) -> tuple[str, date]:
        return self.attempt_id, self.at.astimezone(timezone.utc).date()


_ROW_COLUMNS = (history.c.attempt_id, history.c.seq, history.c.at, history.c.duration_ms, history.c.tries,
                history.c.note)


def _row(r: Any) -> _Row:
    return _Row(r.attempt_id, r.seq, r.at, r.duration_ms, r.tries or 1,
                renewals_in(RENEW, SUMMARY_OUTCOME, r.note) if r.note else 1)


def _raw_page(ids: Sequence[str], cutoff: datetime, after: tuple[str, datetime, int] | None,
              limit: int) -> Any:
    """The next ``limit`` raw renewal rows of ``ids`` before ``cutoff``, in (attempt, at, seq) order."""
    q = (sa.select(history.c.attempt_id, history.c.seq, history.c.at, history.c.duration_ms,
                   history.c.tries, sa.null().label("note"))
         .where(_IS_RENEWAL, history.c.outcome == "ok", history.c.attempt_id.in_(ids),
                history.c.at < cutoff, history.c.source == PROVISIONED, history.c.dest == PROVISIONED)
         .order_by(history.c.attempt_id, history.c.at, history.c.seq).limit(limit))
    if after is not None:
        q = q.where(sa.tuple_(history.c.attempt_id, history.c.at, history.c.seq) > sa.tuple_(
            sa.literal(after[0]), sa.literal(after[1], history.c.at.type), sa.literal(after[2])))
    return q


def _summaries(ids: Iterable[str], since: datetime, cutoff: datetime) -> Any:
    """The summary rows of ``ids`` from ``since`` to ``cutoff`` (the days a page may merge into)."""
    return sa.select(*_ROW_COLUMNS).where(
        _IS_RENEWAL, history.c.outcome == SUMMARY_OUTCOME, history.c.attempt_id.in_(sorted(set(ids))),
        history.c.at >= since, history.c.at < cutoff)


def _merge(rows: Sequence[_Row]) -> dict[str, Any]:
    """One summary row (as INSERT values) for the rows of one attempt and day."""
    first = min(rows, key=lambda r: (r.at, r.seq))
    durations = [r.duration_ms for r in rows if r.duration_ms is not None]
    count = sum(r.count for r in rows)
    return {"attempt_id": first.attempt_id, "seq": min(r.seq for r in rows), "trigger": RENEW,
            "source": PROVISIONED, "dest": PROVISIONED, "at": first.at,
            "duration_ms": sum(durations) if durations else None, "worker": None,
            "outcome": SUMMARY_OUTCOME, "tries": sum(r.tries for r in rows), "error": None,
            "note": summary_note(count)}


class HistoryPruner:
    """Folds old renewal rows into daily summaries on one database (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine, *, batch_attempts: int = 500, batch_rows: int = 5000) -> None:
        if batch_attempts < 1 or batch_rows < 1:
            raise ValueError("batch_attempts and batch_rows must be at least 1")
        self.engine = engine
        self.batch_attempts = batch_attempts
        self.batch_rows = batch_rows

    def prune(self, cutoff: datetime, *, dry_run: bool = False,
              should_stop: Callable[[], bool] = lambda: False) -> PruneReport:
        """Summarise every renewal row older than ``cutoff`` (a UTC midnight); see the module doc.

        ``should_stop`` is asked between batches (a worker shutting down); what is done stays done.
        """
        if cutoff != retention_cutoff(cutoff, timedelta(0)):
            raise ValueError(f"cutoff must be a UTC midnight (retention_cutoff), got {cutoff.isoformat()}")
        report = PruneReport(cutoff=cutoff, dry_run=dry_run)
        after_id: str | None = None
        while not should_stop():
            ids = self._attempt_ids(after_id)
            if not ids:
                break
            touched: set[str] = set()
            (self._count_batch if dry_run else self._fold_batch)(ids, cutoff, report, touched)
            report.attempts += len(touched)
            after_id = ids[-1]
        return report

    def _reader(self) -> sa.Connection:
        """A connection for reads only: on SQLite no BEGIN IMMEDIATE, so no write lock is taken."""
        return self.engine.connect().execution_options(**AUTOCOMMIT_OPTIONS)

    def _attempt_ids(self, after: str | None) -> list[str]:
        q = sa.select(attempts.c.id).order_by(attempts.c.id).limit(self.batch_attempts)
        if after is not None:
            q = q.where(attempts.c.id > after)
        with self._reader() as conn:
            return list(conn.execute(q).scalars())

    def _fold_batch(self, ids: list[str], cutoff: datetime, report: PruneReport, touched: set[str]) -> None:
        tries_left = 3
        while tries_left:
            with self.engine.begin() as conn:
                raw = [_row(r) for r in conn.execute(_raw_page(ids, cutoff, None, self.batch_rows))]
                if not raw:
                    return
                folded = self._fold_page(conn, raw, cutoff)
                if folded is None:
                    conn.rollback()
                    report.conflicts += 1
                    tries_left -= 1
                    continue
            report.pages += 1
            report.renewal_rows += len(raw)
            report.summaries += folded
            touched.update(r.attempt_id for r in raw)
            if len(raw) < self.batch_rows:
                return

    def _fold_page(self, conn: sa.Connection, raw: list[_Row], cutoff: datetime) -> int | None:
        """Replace ``raw`` (and same-day summaries) by merged summaries; net summaries added, or None."""
        since = datetime.combine(min(r.at for r in raw).astimezone(timezone.utc).date(), time(0),
                                 tzinfo=timezone.utc)
        days: dict[tuple[str, date], list[_Row]] = {}
        for r in raw:
            days.setdefault(r.day, []).append(r)
        old = [s for s in map(_row, conn.execute(_summaries((r.attempt_id for r in raw), since, cutoff)))
               if s.day in days]
        for s in old:
            days[s.day].append(s)
        doomed = [(r.attempt_id, r.seq) for r in [*raw, *old]]
        deleted = 0
        for i in range(0, len(doomed), _DELETE_CHUNK):
            pairs = doomed[i:i + _DELETE_CHUNK]
            deleted += conn.execute(history.delete().where(
                sa.tuple_(history.c.attempt_id, history.c.seq).in_(pairs))).rowcount
            # Their events go with them: delivered long ago, and no longer in the feed (which joins
            # history), while a pending one would hold the attempt's later webhooks back for ever.
            conn.execute(events.delete().where(
                sa.tuple_(events.c.attempt_id, events.c.history_seq).in_(pairs)))
        if deleted != len(doomed):
            return None  # another pruner folded some of these rows first
        # A summary is not a transition: the history trigger writes no event for it (migration 0013).
        conn.execute(history.insert(), [_merge(rows) for rows in days.values()])
        return len(days) - len(old)

    def _count_batch(self, ids: list[str], cutoff: datetime, report: PruneReport, touched: set[str]) -> None:
        after: tuple[str, datetime, int] | None = None
        last_day: tuple[str, date] | None = None
        while True:
            with self._reader() as conn:
                raw = [_row(r) for r in conn.execute(_raw_page(ids, cutoff, after, self.batch_rows))]
                if not raw:
                    return
                since = datetime.combine(raw[0].at.astimezone(timezone.utc).date(), time(0),
                                         tzinfo=timezone.utc)
                summarised = {s.day for s in map(_row, conn.execute(
                    _summaries((r.attempt_id for r in raw), since, cutoff)))}
            new_days = {r.day for r in raw} - summarised - {last_day}
            report.pages += 1
            report.renewal_rows += len(raw)
            report.summaries += len(new_days)
            touched.update(r.attempt_id for r in raw)
            last_day = raw[-1].day
            after = (raw[-1].attempt_id, raw[-1].at, raw[-1].seq)
            if len(raw) < self.batch_rows:
                return


class RetentionSchedule:
    """Runs ``HistoryPruner.prune`` for a worker at most once per ``interval_s`` (default hourly).

    ``keep_days`` 0 turns it off. The worker calls ``maybe_run`` outside any step's transaction
    (``run_in_thread`` does so from a thread of its own), and a failure is logged by the caller's
    loop and tried again at the next interval. The cutoff moves once a day (midnight UTC), so
    once a run has finished a cutoff, the hourly checks skip until the next one: each worker
    reads the table once a day, not once an hour.
    """

    def __init__(self, pruner: HistoryPruner, keep_days: int, clock: Callable[[], datetime], *,
                 interval_s: float = 3600.0) -> None:
        if keep_days < 0:
            raise ValueError(f"keep_days must be 0 (keep everything) or more, got {keep_days}")
        self.pruner = pruner
        self.keep = timedelta(days=keep_days)
        self.clock = clock
        self.interval = timedelta(seconds=interval_s)
        self.last_run: datetime | None = None
        self.finished: datetime | None = None  # the last cutoff a run went through to the end

    @property
    def enabled(self) -> bool:
        """False when retention is off (keep everything)."""
        return self.keep > timedelta(0)

    def maybe_run(self, should_stop: Callable[[], bool] = lambda: False) -> PruneReport | None:
        """Prune if enabled and the last run is ``interval_s`` ago or more; the report, or None."""
        now = self.clock()
        if not self.enabled or (self.last_run is not None and now - self.last_run < self.interval):
            return None
        self.last_run = now
        cutoff = retention_cutoff(now, self.keep)
        if cutoff == self.finished:
            return None
        report = self.pruner.prune(cutoff, should_stop=should_stop)
        if not should_stop() and not report.conflicts:
            self.finished = cutoff
        return report

    def run_in_thread(self, stop: threading.Event, on_error: Callable[[BaseException], None],
                      on_report: Callable[[PruneReport], None] = lambda _r: None) -> threading.Thread | None:
        """Start a daemon thread that calls ``maybe_run`` until ``stop`` is set; None when disabled."""
        if not self.enabled:
            return None

        def loop() -> None:
            while not stop.is_set():
                try:
                    report = self.maybe_run(stop.is_set)
                    if report is not None:
                        on_report(report)
                except Exception as exc:  # noqa: BLE001 - retention must never take the worker down
                    on_error(exc)
                stop.wait(min(60.0, self.interval.total_seconds()))

        thread = threading.Thread(target=loop, name="history-retention", daemon=True)
        thread.start()
        return thread

"""The scheduler: one ``tick`` (claim due attempts, run and group-commit their steps) and the
worker loop around it. ``Engine`` delegates ``tick``, ``run_until_idle``, ``next_wait`` and ``run``
here; this module never imports the facade (it is handed the parts it drives)."""
from __future__ import annotations

import builtins
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.config import EngineSettings, RetryPolicy
from engine.core.delivery import EventDispatcher
from engine.core.guard import retire_replaced
from engine.core.heartbeat import Heartbeat
from engine.core.observe import StepObserver
from engine.core.outage import log_failure
from engine.core.parking import Parking
from engine.core.runner import PreparedStep, StepResult, StepRunner
from engine.errors import InvalidInputError
from engine.tracing import step_context
from persistence.repository import Repository
from states.attempt import Attempt

log = logging.getLogger(__name__)
ONCE_TICK_FAILURES = 3  # `worker --once` gives up (exit 1) after this many failed ticks in a row


@dataclass
class TickReport:
    """What one ``tick`` did."""

    at: datetime
    results: list[StepResult] = field(default_factory=list)
    delivered: int = 0  # webhook events delivered after the steps (issue 10/12)
    # Set when the worker cannot do its job (e.g. platform credentials rejected): the loop stops and
    # the CLI exits 1 with this message (issue 18 item 4's hook for "parking").
    fatal: str | None = None

    @property
    def claimed(self) -> int:
        """Attempts claimed in this tick."""
        return len(self.results)

    @property
    def steps(self) -> int:
        """Steps run in this tick (an attempt may run two under one claim; released ones ran none)."""
        return sum(r.steps for r in self.results)

    def count(self, outcome: str) -> int:
        """How many steps ended with ``outcome`` (advanced, failed, retry, waiting, lost, released)."""
        return sum(1 for r in self.results if r.outcome == outcome)


def worst_step_seconds(timeouts: tuple[float, float], policy: RetryPolicy, settings: EngineSettings) -> float:
    """The longest a step may take, commit window included; ``InvalidInputError`` (``lease_s``)
    when the lease is not longer than that."""
    # The lease protocol is sound only if a lease outlives the longest step: otherwise a second
    # worker takes over a step that is still running (see test_many_workers).
    connect_s, read_s = timeouts
    p = policy
    worst = p.in_process_attempts * (connect_s + read_s) + (
        p.in_process_attempts - 1) * p.in_process_max
    # A step's result may wait up to the commit window for its group.
    worst_step_s = worst + max(0.0, settings.commit_window_s)
    if settings.lease_s <= worst_step_s:
        raise InvalidInputError(
            "lease_s",
            f"a lease of {settings.lease_s:g}s is shorter than the longest step "
            f"({p.in_process_attempts} tries x "
            f"({connect_s:g}s connect + {read_s:g}s read) "
            f"+ waits + {settings.commit_window_s:g}s commit window = {worst_step_s:g}s)",
            hint="Raise PROVISION_LEASE_SECONDS or lower the client timeouts.",
        )
    return worst_step_s


class Scheduler:
    """Claims due attempts and runs their steps (``tick``), and loops doing so (``run``).

    Handed exactly what it drives: the repository, the step runner, the parking state, the event
    dispatcher, and the operator moves that retire replaced connections (``cancel``, ``disconnect``).
    ``wake`` is the event that cuts the loop's wait short (``Engine.wake`` sets it).
    """

    def __init__(
        self,
        repo: Repository,
        runner: StepRunner,
        *,
        parking: Parking,
        dispatch: EventDispatcher,
        clock: Callable[[], datetime],
        settings: EngineSettings,
        observer: StepObserver,
        worker_id: str,
        worst_step_s: float,
        wake: threading.Event,
        heartbeat: Heartbeat | None,
        cancel: Callable[[str], Attempt],
        disconnect: Callable[[str], Attempt],
    ) -> None:
        self.repo = repo
        self.runner = runner
        self.parking = parking
        self.dispatch = dispatch
        self.clock = clock
        self.settings = settings
        self.observer = observer
        self.worker_id = worker_id
        self._worst_step_s = worst_step_s
        self._wake = wake
        self.heartbeat = heartbeat
        self.cancel = cancel
        self.disconnect = disconnect
        self._pool: ThreadPoolExecutor | None = None

    def now(self) -> datetime:
        """The engine clock."""
        return self.clock()

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass: run the due steps, retire replaced connections, then hooks and deliveries."""
        report = self._step_due(now or self.now())
        retire_replaced(self.repo, self.cancel, self.disconnect)  # --replace (engine.core.guard)
        report.delivered = self.dispatch.after_commit(report.at)
        return report

    def _step_due(self, at: datetime) -> TickReport:
        """Claim due attempts, run their steps and commit the results.

        Results are group-committed: the decisions of the steps that finish within
        ``commit_window_s`` of the first uncommitted one are written in one transaction (one
        commit for many steps instead of one each). Renewals commit at once (see
        ``PreparedStep.urgent``). A step that leads to a step due at once is followed by that step
        under the same claim (``StepRunner.prepare``). A step whose lease could run out before its
        result is committed is not started; its lease is released so any worker can take it. That
        is judged again before its first platform call, after any database wait of its handler.
        """
        self.runner.drain_spool()  # rotated tokens the database refused before (issue 16 item 1)
        if self.parking.seconds_left(at) > 0:
            return TickReport(at)  # parked: claim nothing until the backoff runs out
        lease_until = at + timedelta(seconds=self.settings.lease_s)
        batch = self.repo.claim_due(at, self.worker_id, lease_until, self.settings.batch_size)
        report = TickReport(at)
        if not batch:
            return report
        self.runner.realms.prepare(batch)  # the callback steps' free realms, one write (realm_claims)
        window = self.settings.commit_window_s
        results: dict[str, StepResult] = {}
        group: builtins.list[PreparedStep] = []
        group_since = 0.0

        def flush() -> None:
            if group:
                results.update((r.attempt_id, r) for r in self.runner.commit(group))
                group.clear()

        last_start = lease_until - timedelta(seconds=self._worst_step_s)

        def in_time() -> bool:
            # Can a step started now finish, and be committed, before the lease runs out? Judged
            # on the engine clock, the one that wrote lease_until and that other workers compare.
            return self.now() < last_start

        def prepare(attempt: Attempt) -> PreparedStep | None:
            if not in_time() or self.parking.seconds_left(self.now()) > 0:
                return None  # too late to finish (and commit) under the lease, or the queue parked
            # The step's HTTP calls carry its attempt and state (engine.tracing); observers time it.
            with step_context(attempt.id, attempt.state.value), self.observer.running(attempt, self.now()):
                return self.runner.prepare(attempt, may_chain=in_time, in_time=in_time)

        if self.settings.concurrency <= 1 or len(batch) == 1:
            prepared: Iterable[PreparedStep | None] = (prepare(a) for a in batch)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.settings.concurrency, thread_name_prefix="provision-step"
                )
            prepared = self._pool.map(prepare, batch)
        steps = iter(prepared)
        try:
            for attempt, step in zip(batch, steps, strict=True):
                if step is None or step.released:
                    results[attempt.id] = self.runner.release(attempt)
                elif step.urgent or window <= 0:
                    results[attempt.id] = self.runner.commit([step])[0]
                else:
                    if not group:
                        group_since = time.monotonic()
                    group.append(step)
                    if time.monotonic() - group_since >= window:
                        flush()
            flush()
        except Exception:
            # Steps run in parallel may have rotated tokens that will now never be committed by
            # this tick: keep them in the spool before the error ends the tick (issue 16 item 1).
            self.runner.spool_uncommitted(itertools.chain(group, steps))
            raise
        report.results = [results[a.id] for a in batch]
        for result in report.results:
            self.observer.step(result)
        return report

    def run_until_idle(self, max_ticks: int = 10_000) -> builtins.list[TickReport]:
        """Tick until nothing is due now (waiting attempts and future retries stay pending)."""
        reports = []
        for _ in range(max_ticks):
            report = self.tick()
            if not report.claimed:
                break
            reports.append(report)
        return reports

    def next_wait(self, now: datetime) -> float:
        """Seconds until the next due attempt, capped by ``poll_max_s``."""
        if (parked := self.parking.seconds_left(now)) > 0:
            return min(self.settings.poll_max_s, parked)
        due = self.repo.next_due_at(now)
        if due is None:
            return self.settings.poll_max_s
        return max(0.0, min(self.settings.poll_max_s, (due - now).total_seconds()))

    def run(self, stop: threading.Event, *, once: bool = False,
            on_tick: Callable[[TickReport], None] | None = None) -> int:
        """The worker loop: tick, then wait until the next due time; returns steps run (``Engine.run``)."""
        steps = 0
        failures = 0
        self._release_quarantined()
        while not stop.is_set():
            try:  # the wait computation reads the database too (issue 16 item 6)
                self._wake.clear()  # before the tick: a wake() during it cuts the wait below short
                report = self.tick()
                wait = 0.0 if once or report.claimed or report.delivered else self.next_wait(self.now())
                failures = 0
                if self.heartbeat is not None:  # at most every few seconds, off the per-step path
                    self.heartbeat.after_tick(self.worker_id, report.claimed)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the worker (STYLE 11)
                failures += 1
                if once and failures >= ONCE_TICK_FAILURES:
                    raise
                pause = min(self.settings.poll_max_s, 0.5 * 2 ** min(failures, 4))
                log_failure(log, "tick", exc, failures=failures, retry_s=pause)  # one line per database error
                # Nothing was committed by the failed tick; leases it took expire and are reclaimed.
                stop.wait(pause)
                continue
            steps += report.steps
            if on_tick is not None:
                on_tick(report)
            if report.fatal:
                break
            if once:
                if report.claimed == 0:
                    break
                continue
            if report.claimed or report.delivered:
                continue  # more may be due right away
            if wait > 0:
                self._wake.wait(wait)  # stop handlers call wake() too, so shutdown is prompt
        if self.heartbeat is not None:
            self.heartbeat.stop(self.worker_id)
        return steps

    def _release_quarantined(self) -> None:
        # The operator's fix for a quarantined row is a worker start with a key that opens it.
        try:
            released = self.repo.release_quarantined(self.now())
        except Exception:  # noqa: BLE001 - a database hiccup here must not stop the worker starting
            log.exception("could not look for quarantined attempts to release")
            return
        if released:
            log.warning("released %d quarantined attempt(s): the configured key opens them now", released)

    def close(self) -> None:
        """Release the step thread pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

"""The ``Engine``: the embeddable API of element-provisioner (explicit object, no globals)."""
from __future__ import annotations

import builtins
import itertools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from engine.clock import utcnow
from engine.config import PRINTABLE_RE, EngineSettings, RenewalPolicy, RetryPolicy
from engine.core import starts
from engine.core.callbacks import CallbackOutcome, CallbackReceiver
from engine.core.connect import ConnectLinks
from engine.core.delivery import EventDispatcher, Hook, WebhookPort
from engine.core.element_check import ElementCheck, check_element
from engine.core.events import Event
from engine.core.guard import check_no_live_duplicate, retire_replaced
from engine.core.health import HealthChecker
from engine.core.heartbeat import Heartbeat
from engine.core.intake import attempt_id_to_look_up, validate_list, validate_reason, validate_start
from engine.core.lookup import resolve_attempt_id
from engine.core.observe import NoObserver, StepObserver
from engine.core.outage import log_failure
from engine.core.parking import Parking
from engine.core.runner import PreparedStep, StepResult, StepRunner
from engine.core.spool import TokenSpool, default_directory
from engine.errors import (
    AttemptNotFoundError,
    CallbackRejectedError,
    ConcurrentUpdateError,
    InvalidInputError,
    InvalidTransitionError,
)
from engine.tracing import step_context
from persistence.attempt_filter import AttemptFilter
from persistence.outbox import Outbox
from persistence.repository import Repository
from persistence.workers import DEAD_AFTER_LEASES, WorkerRow, live_workers
from persistence.writes import transition_write
from states.attempt import Attempt, HistoryEntry
from states.exactly_once import create_in_flight
from states.machine import next_state
from states.model import FailureReason, Flow, State, Trigger
from states.ports import PlatformPort, StepSettings
from states.realm import realm_at_start

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


class Engine:
    """Starts attempts, applies callbacks and drives due steps against one database and platform.

    Two engines in one process are independent; every dependency (repository, client, clock,
    sleep, random source) is passed in so tests can replace it. The engine composes the parts
    that do the work, handing each exactly what it uses: the callback receiver
    (``engine.core.callbacks``) and the step runner (``engine.core.runner``).
    """

    def __init__(
        self,
        repo: Repository,
        client: PlatformPort,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        policy: RetryPolicy | None = None,
        renewal_policy: RenewalPolicy | None = None,
        settings: EngineSettings | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        webhooks: WebhookPort | None = None,
        outbox: Outbox | None = None,
        heartbeat: Heartbeat | None = None,
        observer: StepObserver | None = None,
    ) -> None:
        self.repo = repo
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.policy = policy or RetryPolicy()
        self.renewal_policy = renewal_policy or RenewalPolicy()
        self.settings = settings or EngineSettings()
        self.step_settings = StepSettings(
            callback_wait_s=self.settings.callback_wait_s,
            renewal_max_lead_s=self.settings.renewal_max_lead_s,
            create_settle_s=self.settings.create_settle_s or max(5.0, 3 * client.timeouts[1]))
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.rng = rng or random.Random()
        self.observer: StepObserver = observer or NoObserver()  # metrics (issue 18 must-have 6)
        self.heartbeat = heartbeat  # None: this engine is not listed by `provision workers`
        self._check_lease()
        self._wake = threading.Event()
        self.callbacks = CallbackReceiver(repo, clock=clock, worker_id=self.worker_id, wake=self.wake)
        # Platform-wide errors (bad ELEMENTS_* secrets) park the queue instead of failing attempts.
        self.parking = Parking(self.now)
        self.runner = StepRunner(
            repo, client, clock=clock, sleep=sleep, policy=self.policy, renewal_policy=self.renewal_policy,
            rng=self.rng, worker_id=self.worker_id, step_settings=self.step_settings,
            apply_pending=self.callbacks.apply_pending, reject_pending=self.callbacks.reject_pending,
            parking=self.parking,
            spool=TokenSpool(default_directory(str(repo.engine.url), self.settings.spool_dir),
                             worker_id=self.worker_id, codec=repo.codec))
        self._pool: ThreadPoolExecutor | None = None
        # Events (issue 10/12): hooks for this engine's commits, the feed, webhook delivery.
        self.dispatch = EventDispatcher(
            outbox or Outbox(repo.engine), worker_id=self.worker_id, clock=self.clock,
            consent_url=self._consent_url, webhooks=webhooks, lease_s=self.settings.lease_s, rng=self.rng,
            observer=self.observer)
        # Connection lifecycle (issue 10/12): health checks and the customer's connect links.
        self.health = HealthChecker(repo, client, clock=self.clock, worker_id=self.worker_id)
        self.links = ConnectLinks(repo, clock=self.clock, public_url=self.settings.public_url)

    def _check_lease(self) -> None:
        # The lease protocol is sound only if a lease outlives the longest step: otherwise a second
        # worker takes over a step that is still running (see test_many_workers).
        connect_s, read_s = self.client.timeouts
        p = self.policy
        worst = p.in_process_attempts * (connect_s + read_s) + (
            p.in_process_attempts - 1) * p.in_process_max
        # A step's result may wait up to the commit window for its group.
        self._worst_step_s = worst + max(0.0, self.settings.commit_window_s)
        if self.settings.lease_s <= self._worst_step_s:
            raise InvalidInputError(
                "lease_s",
                f"a lease of {self.settings.lease_s:g}s is shorter than the longest step "
                f"({p.in_process_attempts} tries x "
                f"({connect_s:g}s connect + {read_s:g}s read) "
                f"+ waits + {self.settings.commit_window_s:g}s commit window = {self._worst_step_s:g}s)",
                hint="Raise PROVISION_LEASE_SECONDS or lower the client timeouts.",
            )

    # --- time ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The engine clock (injectable)."""
        return self.clock()

    def wake(self) -> None:
        """Cut the worker's current wait short (a callback made work due)."""
        self._wake.set()

    # --- attempts --------------------------------------------------------------------------------

    def start(self, element: str, name: str, *, flow: str | Flow | None = None, api_key: str | None = None,
              api_secret: str | None = None, callback_url: str | None = None, tags: Iterable[str] = (),
              config: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
              callback_wait_s: int | None = None, customer: str | None = None,
              replace: bool = False, renewal: str | None = None, verify_element: bool = False) -> Attempt:
        """Create an attempt in NEW, due now; with a known ``idempotency_key`` return the existing one.

        ``customer`` is the application's own id for the account: stored, filterable, carried in
        every event. While that customer has a live attempt for ``element``, a new one is refused
        (``DuplicateConnectionError``, naming it) unless ``replace``; so is a quick start whose
        ``quickbooks.realm.id`` a live attempt connects (``DuplicateRealmError``). ``renewal``
        (``engine``/``platform``) says who renews the tokens once PROVISIONED; the default is the
        flow's (DESIGN §7: ``platform`` for consent flows, ``engine`` for quick). Raises
        ``InvalidInputError`` (``MissingConfigurationError`` for missing entries) before anything is
        stored or sent. ``verify_element`` first asks the platform (``element_check``): an unknown
        element raises ``UnknownElementError``, an unreachable platform
        ``ElementCheckUnavailableError``; unknown configuration keys are logged as a warning.
        """
        req = validate_start(element=element, name=name, flow=flow, api_key=api_key, api_secret=api_secret,
                             callback_url=callback_url, tags=tags, config=config,
                             idempotency_key=idempotency_key, callback_wait_s=callback_wait_s,
                             customer=customer, replace=replace,
                             renewal=renewal)
        if verify_element:
            warning = self.element_check(req.element_key, req.config).warning()
            if warning:
                log.warning("%s", warning)
        if realm_at_start(req.flow, req.config) is not None:
            # A quick start names its realm: claimed in the insert's transaction (engine.core.realm_start).
            [(stored, created)] = starts.start_many(self.repo, [req], self.now(), single=True)
        else:
            [req] = check_no_live_duplicate(self.repo, [req])
            stored, created = self.repo.insert_attempt(starts.new_attempt(req, self.now()))
        if not created:
            starts.check_same_inputs(stored, req)
        else:
            log.info("attempt %s started: %s/%s", stored.id, stored.element_key, stored.flow)
            self.wake()
        return stored

    def element_check(self, element: str, config: Mapping[str, Any] | None = None) -> ElementCheck:
        """Ask the platform (GET /elements/{key}) whether ``element`` exists and which configuration
        keys it knows; ``.unknown_keys`` are those of ``config`` it does not (``.warning()`` says so).

        Raises ``UnknownElementError`` (input, 404) or ``ElementCheckUnavailableError`` (the platform
        did not answer); stores nothing.
        """
        return check_element(self.client, element, (config or {}).keys())

    def start_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Attempt]:
        """Start many attempts (``start`` keywords per item) in ONE transaction; all or none.

        Every item is validated first: ``InvalidInputError`` names the item and field (e.g.
        ``items[3].callback_url``) and nothing is stored. Idempotency keys work as in ``start``.
        Quick items whose ``quickbooks.realm.id`` a live attempt (or an earlier item) names refuse
        the whole batch: ``DuplicateRealmError`` names every such item, and nothing is stored.
        At most ``starts.MAX_START_MANY`` items per call.
        """
        results = starts.start_many(self.repo, starts.validate_items(items), self.now())
        created = sum(1 for _, new in results if new)
        if created:
            log.info("%d attempts started (%d already existed)", created, len(results) - created)
            self.wake()
        return [a for a, _ in results]

    def get(self, attempt_id: str) -> Attempt:
        """The attempt, or ``AttemptNotFoundError``."""
        key = attempt_id_to_look_up(attempt_id)
        # Lenient: an attempt whose secrets the key cannot open is shown, marked unreadable_secrets.
        attempt = self.repo.get(key, lenient=True) if key is not None else None
        if attempt is None:
            raise AttemptNotFoundError(str(attempt_id)[:60])
        return attempt

    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the one attempt whose id starts with ``id_or_prefix`` (4+ characters)."""
        return resolve_attempt_id(self.repo, id_or_prefix)

    def list(self, state: State | str | None = None, *, element: str | None = None,
             older_than: timedelta | None = None, newer_than: timedelta | None = None,
             limit: int | None = None, created_before: datetime | None = None,
             customer: str | None = None, reason: str | None = None) -> builtins.list[Attempt]:
        """Attempts, newest first, filtered by state, element, customer, failure ``reason`` and age.

        ``created_before`` (exclusive) pages through the list by keyset: pass the last row's
        ``created_at`` (plus one microsecond to include its ties) to get the next page.
        """
        f = validate_list(state, element, older_than, newer_than, limit, customer)
        if created_before is not None and not (isinstance(created_before, datetime)
                                               and created_before.tzinfo is not None):
            raise InvalidInputError("created_before", "must be a timezone-aware datetime")
        now = self.now()
        before = [b for b in (created_before, now - f.older_than if f.older_than is not None else None) if b]
        return self.repo.list(
            state=f.state, element=f.element, customer=f.customer, limit=f.limit,
            reason=validate_reason(reason),
            created_before=min(before) if before else None,
            created_after=now - f.newer_than if f.newer_than is not None else None,
        )

    def find(self, selection: AttemptFilter, *, after: tuple[datetime, str] | None = None,
             limit: int = 50) -> builtins.list[Attempt]:
        """At most ``limit`` (1-10,000) attempts of ``selection``, newest first, after the keyset
        cursor ``after`` (the last row's ``(created_at, id)``): every filter runs in the database."""
        if not 1 <= limit <= 10_000:
            raise InvalidInputError("limit", f"must be from 1 to 10000, got {limit}")
        return self.repo.find(selection, after=after, limit=limit)

    def count_matching(self, selection: AttemptFilter) -> int:
        """How many attempts ``selection`` selects (one ``COUNT(*)``)."""
        return self.repo.count(selection)

    def counts(self) -> dict[str, int]:
        """Attempts per state."""
        return self.repo.counts_by_state()

    def history(self, attempt_id: str) -> builtins.list[HistoryEntry]:
        """The attempt's transitions in order."""
        self.get(attempt_id)
        return self.repo.history(attempt_id)

    def redirect_url(self, attempt: Attempt) -> str | None:
        """The consent URL to send the user to, while the attempt is REDIRECTED."""
        return attempt.secrets.get("redirect_url") if attempt.state is State.REDIRECTED else None

    def handle_callback(self, url_or_params: str | Mapping[str, Any]) -> CallbackOutcome:
        """Apply a provider redirect (full URL, query string or params); see ``engine.core.callbacks``."""
        try:
            outcome = self.callbacks.receive(url_or_params)
        except CallbackRejectedError:
            self.observer.callback("rejected")
            raise
        self.observer.callback(outcome.status)
        self.dispatch.dispatch_hooks()
        return outcome

    # --- events (issue 10/12, engine.core.delivery) -----------------------------------------------

    def subscribe(self, callback: Hook, *, types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` after each transition this engine commits (``types``: only those).

        Runs in this process after the commit; an exception is logged and affects nothing.
        Returns a function that unsubscribes.
        """
        return self.dispatch.subscribe(callback, types)

    def events(self, after: int = 0, limit: int = 100) -> builtins.list[Event]:
        """The event feed: up to ``limit`` events with ``seq > after``, oldest first; never skips one."""
        return self.dispatch.events(after, limit)

    def redeliver(self, seq: int | None = None, *, failed: bool = False) -> int:
        """Send webhook event ``seq`` again, or (``failed=True``) every dead-lettered one; returns a count."""
        return self.dispatch.redeliver(seq, failed=failed)

    def deliver_events(self, now: datetime | None = None) -> int:
        """Send the webhook events due now (``tick`` does this too); returns how many were delivered."""
        return self.dispatch.deliver(now)

    def _consent_url(self, attempt_id: str, history_seq: int) -> str | None:
        attempt = self.repo.get(attempt_id)
        ok = attempt is not None and attempt.history_seq == history_seq
        return self.redirect_url(attempt) if ok and attempt is not None else None

    # --- operator actions ------------------------------------------------------------------------

    def _operator_move(self, attempt_id: str, trigger: Trigger, *, reason: str | None,
                       next_run_at: Callable[[], datetime | None], actor: str | None = None) -> Attempt:
        _check_actor(actor)
        for _ in range(5):
            attempt = self.get(attempt_id)
            dest = next_state(trigger, attempt.state)
            if dest is None:
                raise InvalidTransitionError(
                    f"cannot {trigger.value} attempt {attempt.id} in state {attempt.state}"
                )
            now = self.now()
            error = {"kind": reason, "message": "cancelled by an operator"} if reason else None
            entry = HistoryEntry.after(attempt, trigger.value, dest, now, worker=self.worker_id,
                                       outcome="failed" if reason else "ok", error=error,
                                       note=f"operator:{actor}" if actor else "operator")
            marker = create_in_flight(attempt, now) if trigger is Trigger.FAIL else None
            if marker is not None:
                entry = replace(entry, note=f"{entry.note}; {marker.note}")
            write = transition_write(attempt, entry, owner=None, now=now, next_run_at=next_run_at(),
                                     failure_reason=reason, last_error=error,
                                     secret_updates=marker.secrets if marker else None)
            if self.repo.apply(write):
                self.wake()
                self.dispatch.dispatch_hooks()
                return self.get(attempt_id)
        raise ConcurrentUpdateError(f"attempt {attempt_id} kept changing; try again")

    def cancel(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a non-terminal attempt to FAILED(cancelled); ``actor`` names the operator in the history."""
        return self._operator_move(attempt_id, Trigger.FAIL, reason=FailureReason.CANCELLED.value,
                                   next_run_at=lambda: None, actor=actor)

    def reauthorize(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """New consent for the same instance after ``renewal_rejected`` (PUT ?reAuthenticate=true).

        The attempt goes FAILED --reauthorize--> NEW (its own trigger, so the history tells it
        from a restart) and walks the OAuth flow again; its final step re-authenticates the
        existing instance instead of creating a second one.
        """
        attempt = self.get(attempt_id)
        if attempt.state is not State.FAILED or not attempt.instance_id:
            raise InvalidTransitionError(
                f"attempt {attempt.id} is {attempt.state} without a failed instance to re-authorise",
                hint="Only FAILED attempts that have an instance (e.g. renewal_rejected) "
                "can be re-authorised.",
            )
        if attempt.flow is Flow.QUICK:
            raise InvalidTransitionError(
                f"attempt {attempt.id} used the quick flow: there is no consent to repeat",
                hint="Start a new quick attempt with fresh tokens, or use flow='oauth1' or 'oauth2'.")
        return self._operator_move(attempt.id, Trigger.REAUTHORIZE, reason=None, next_run_at=self.now,
                                   actor=actor)

    def restart(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a FAILED attempt back to NEW (history is kept); it is due at once."""
        return self._operator_move(attempt_id, Trigger.RESTART, reason=None, next_run_at=self.now,
                                   actor=actor)

    # --- connection lifecycle (issue 10/12) -----------------------------------------------------

    def disconnect(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Take a PROVISIONED (or FAILED) attempt's connection down: DISCONNECTING, whose durable
        step revokes the engine-held provider token and deletes the instance, then DISCONNECTED
        (``states.disconnect``); emits ``connection.disconnected``. Due at once."""
        return self._operator_move(attempt_id, Trigger.DISCONNECT, reason=None, next_run_at=self.now,
                                   actor=actor)

    def check(self, attempt_id: str) -> Attempt:
        """Ask the platform about a PROVISIONED attempt's instance and record ``health`` (see
        ``engine.core.health``); an instance that became unhealthy emits ``connection.unhealthy``."""
        attempt = self.health.check(attempt_id, self.get)
        self.dispatch.dispatch_hooks()
        return attempt

    def connect_link(self, attempt_id: str, *, base_url: str | None = None, actor: str | None = None) -> str:
        """A single-use link for the customer that leads to the consent URL (``engine.core.connect``);
        revokes the attempt's previous link. ``base_url`` defaults to ``PROVISION_PUBLIC_URL``.
        ``actor`` (an operator) records the issue in the history as ``operator:<actor>``."""
        _check_actor(actor)
        link = self.links.issue(self.get(attempt_id), base_url, actor=actor)
        if actor is not None:
            self.dispatch.dispatch_hooks()  # the history row's event
        return link

    def open_connect_link(self, token: str | None) -> str | None:
        """Spend a connect link: the consent URL, or None if the link is unknown, used or expired."""
        return self.links.redeem(token)

    # --- the scheduler ---------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass: run the due steps (``_step_due``), then hooks and webhook deliveries (DESIGN §7)."""
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
        """The worker loop: tick, then wait until the next due time; returns steps run.

        ``stop`` (set by SIGINT/SIGTERM handlers) ends the loop after the in-flight tick finishes.
        ``on_tick`` sees every report (the CLI's report lines). With ``once``, a tick that fails
        ``ONCE_TICK_FAILURES`` times in a row is raised: the worker could not do its job. A report
        with ``fatal`` set ends the loop.
        """
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

    def workers(self) -> builtins.list[WorkerRow]:
        """The live engines (heartbeat rows younger than a few lease periods, on the database clock)."""
        return live_workers(self.repo.engine, timedelta(seconds=DEAD_AFTER_LEASES * self.settings.lease_s))

    def keep_alive(self) -> Callable[[], None]:
        """Heartbeat (and key reload) from a thread, for listeners without a worker loop; the stopper."""
        if self.heartbeat is None:
            return lambda: None
        return self.heartbeat.beside(self.worker_id)

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
        """Release the thread pool, HTTP connections and database connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()
        self.dispatch.close()
        self.repo.close()


def _check_actor(actor: str | None) -> None:
    """An operator's name as the history records it: printable, 1 to 100 characters."""
    if actor is not None and not (isinstance(actor, str) and 0 < len(actor) <= 100
                                  and PRINTABLE_RE.fullmatch(actor)):
        raise InvalidInputError("actor", "must be printable text of 1 to 100 characters")

"""The ``Engine``: the embeddable API of element-provisioner (explicit object, no globals)."""
from __future__ import annotations

import builtins
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from engine.clock import utcnow
from engine.config import EngineSettings, RenewalPolicy, RetryPolicy
from engine.core import starts
from engine.core.callbacks import CallbackOutcome, CallbackReceiver
from engine.core.connect import ConnectLinks
from engine.core.delivery import EventDispatcher, Hook, WebhookPort
from engine.core.element_check import ElementCheck, check_element
from engine.core.events import EventPage
from engine.core.health import HealthChecker
from engine.core.heartbeat import Heartbeat
from engine.core.intake import check_flag, validate_start
from engine.core.observe import NoObserver, StepObserver
from engine.core.operator_actions import OperatorActions, check_actor
from engine.core.parking import Parking
from engine.core.queries import AttemptQueries, redirect_url
from engine.core.runner import StepRunner
from engine.core.scheduler import ONCE_TICK_FAILURES, Scheduler, TickReport, worst_step_seconds
from engine.core.spool import TokenSpool, default_directory
from engine.errors import CallbackRejectedError
from persistence.attempt_filter import AttemptFilter
from persistence.outbox import Outbox
from persistence.repository import Repository
from persistence.workers import DEAD_AFTER_LEASES, WorkerRow, live_workers
from states.attempt import Attempt, HistoryEntry
from states.model import Flow, State
from states.ports import PlatformPort, StepSettings
from states.realm import realm_at_start

log = logging.getLogger(__name__)
# Re-exported: they lived here before the scheduler had its own module (engine.core.scheduler).
__all__ = ["ONCE_TICK_FAILURES", "Engine", "TickReport"]


class Engine:
    """Starts attempts, applies callbacks and drives due steps against one database and platform.

    Two engines in one process are independent; every dependency (repository, client, clock,
    sleep, random source) is passed in so tests can replace it. The engine composes the parts
    that do the work, handing each exactly what it uses: the callback receiver
    (``engine.core.callbacks``) and the step runner (``engine.core.runner``), the read side
    (``engine.core.queries``), the operator moves (``engine.core.operator_actions``) and the scheduler with
    its worker loop (``engine.core.scheduler``); the methods here delegate to them.
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
        # The lease must outlive the longest step (engine.core.scheduler.worst_step_seconds).
        worst_step_s = worst_step_seconds(client.timeouts, self.policy, self.settings)
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
        # Events (issue 10/12): hooks for this engine's commits, the feed, webhook delivery.
        self.dispatch = EventDispatcher(
            outbox or Outbox(repo.engine), worker_id=self.worker_id, clock=self.clock,
            consent_url=self._consent_urls, webhooks=webhooks, lease_s=self.settings.lease_s, rng=self.rng,
            observer=self.observer)
        # Connection lifecycle (issue 10/12): health checks and the customer's connect links.
        self.health = HealthChecker(repo, client, clock=self.clock, worker_id=self.worker_id)
        self.links = ConnectLinks(repo, clock=self.clock, public_url=self.settings.public_url)
        # The read side, the operator moves and the scheduler each live in their own module; the
        # methods below delegate to them (composition: STYLE "What to avoid" 3).
        self.queries = AttemptQueries(repo, clock=self.clock)
        self.operator = OperatorActions(repo, clock=self.clock, worker_id=self.worker_id, get=self.get,
                                        wake=self.wake, after_commit=self.dispatch.dispatch_hooks)
        self.scheduler = Scheduler(
            repo, self.runner, parking=self.parking, dispatch=self.dispatch, clock=self.clock,
            settings=self.settings, observer=self.observer, worker_id=self.worker_id,
            worst_step_s=worst_step_s, wake=self._wake, heartbeat=heartbeat,
            cancel=self.cancel, disconnect=self.disconnect)

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
        if check_flag("verify_element", verify_element):
            warning = self.element_check(req.element_key, req.config).warning()
            if warning:
                log.warning("%s", warning)
        if req.customer is not None or realm_at_start(req.flow, req.config) is not None:
            # The customer guard and a quick start's realm claim run in the insert's transaction
            # (persistence.customer_guard, engine.core.realm_start): racing starts cannot both pass.
            [(stored, created)] = starts.start_many(self.repo, [req], self.now(), single=True)
        else:
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
        return self.queries.get(attempt_id)

    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the one attempt whose id starts with ``id_or_prefix`` (4+ characters)."""
        return self.queries.resolve_id(id_or_prefix)

    def list(self, state: State | str | None = None, *, element: str | None = None,
             older_than: timedelta | None = None, newer_than: timedelta | None = None,
             limit: int | None = None, created_before: datetime | None = None,
             customer: str | None = None, reason: str | None = None) -> builtins.list[Attempt]:
        """Attempts, newest first, filtered by state, element, customer, failure ``reason`` and age.

        ``created_before`` (exclusive) pages through the list by keyset: pass the last row's
        ``created_at`` (plus one microsecond to include its ties) to get the next page.
        """
        return self.queries.list(state, element=element, older_than=older_than, newer_than=newer_than,
                                 limit=limit, created_before=created_before, customer=customer,
                                 reason=reason)

    def find(self, selection: AttemptFilter, *, after: tuple[datetime, str] | None = None,
             limit: int = 50) -> builtins.list[Attempt]:
        """At most ``limit`` (1-10,000) attempts of ``selection``, newest first, after the keyset
        cursor ``after`` (the last row's ``(created_at, id)``): every filter runs in the database."""
        return self.queries.find(selection, after=after, limit=limit)

    def count_matching(self, selection: AttemptFilter) -> int:
        """How many attempts ``selection`` selects (one ``COUNT(*)``)."""
        return self.repo.count(selection)

    def counts(self) -> dict[str, int]:
        """Attempts per state."""
        return self.repo.counts_by_state()

    def history(self, attempt_id: str) -> builtins.list[HistoryEntry]:
        """The attempt's transitions in order."""
        return self.queries.history(attempt_id)

    def redirect_url(self, attempt: Attempt) -> str | None:
        """The consent URL to send the user to, while the attempt is REDIRECTED."""
        return redirect_url(attempt)

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

    def events(self, after: int = 0, limit: int = 100,
               types: Iterable[str] | str | None = None) -> EventPage:
        """The event feed: up to ``limit`` events with ``seq > after``, oldest first; never skips one.

        ``types`` (an event type or several, ``engine.core.events.EVENT_TYPES``) keeps only those:
        e.g. ``types="attempt.redirected"`` for the consent URLs to hand to users. Resume from the
        page's ``cursor`` (with types it may be past the last event returned).
        """
        return self.dispatch.events(after, limit, types)

    def redeliver(self, seq: int | None = None, *, failed: bool = False) -> int:
        """Send webhook event ``seq`` again, or (``failed=True``) every dead-lettered one; returns a count."""
        return self.dispatch.redeliver(seq, failed=failed)

    def deliver_events(self, now: datetime | None = None) -> int:
        """Send the webhook events due now (``tick`` does this too); returns how many were delivered."""
        return self.dispatch.deliver(now)

    def _consent_urls(self, waiting: Mapping[str, int]) -> dict[str, str]:
        # Lenient: an attempt whose secrets no key opens has no URL to show, and its event goes
        # out without one; it must not stop the feed, the hooks or the webhooks at that event.
        found = self.repo.get_many(list(waiting), lenient=True)
        return {i: url for i, a in found.items()
                if a.history_seq == waiting[i] and (url := self.redirect_url(a)) is not None}

    # --- operator actions ------------------------------------------------------------------------

    def cancel(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a non-terminal attempt to FAILED(cancelled); ``actor`` names the operator in the history."""
        return self.operator.cancel(attempt_id, actor=actor)

    def reauthorize(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """New consent for the same instance after ``renewal_rejected`` (PUT ?reAuthenticate=true).

        The attempt goes FAILED --reauthorize--> NEW (its own trigger, so the history tells it
        from a restart) and walks the OAuth flow again; its final step re-authenticates the
        existing instance instead of creating a second one.
        """
        return self.operator.reauthorize(attempt_id, actor=actor)

    def restart(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a FAILED attempt back to NEW (history is kept); it is due at once."""
        return self.operator.restart(attempt_id, actor=actor)

    # --- connection lifecycle (issue 10/12) -----------------------------------------------------

    def disconnect(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Take a PROVISIONED (or FAILED) attempt's connection down: DISCONNECTING, whose durable
        step revokes the engine-held provider token and deletes the instance, then DISCONNECTED
        (``states.disconnect``); emits ``connection.disconnected``. Due at once."""
        return self.operator.disconnect(attempt_id, actor=actor)

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
        check_actor(actor)
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
        return self.scheduler.tick(now)

    def run_until_idle(self, max_ticks: int = 10_000) -> builtins.list[TickReport]:
        """Tick until nothing is due now (waiting attempts and future retries stay pending)."""
        return self.scheduler.run_until_idle(max_ticks)

    def next_wait(self, now: datetime) -> float:
        """Seconds until the next due attempt, capped by ``poll_max_s``."""
        return self.scheduler.next_wait(now)

    def run(self, stop: threading.Event, *, once: bool = False,
            on_tick: Callable[[TickReport], None] | None = None) -> int:
        """The worker loop: tick, then wait until the next due time; returns steps run.

        ``stop`` (set by SIGINT/SIGTERM handlers) ends the loop after the in-flight tick finishes.
        ``on_tick`` sees every report (the CLI's report lines). With ``once``, a tick that fails
        ``ONCE_TICK_FAILURES`` times in a row is raised: the worker could not do its job. A report
        with ``fatal`` set ends the loop.
        """
        return self.scheduler.run(stop, once=once, on_tick=on_tick)

    def workers(self) -> builtins.list[WorkerRow]:
        """The live engines (heartbeat rows younger than a few lease periods, on the database clock)."""
        return live_workers(self.repo.engine, timedelta(seconds=DEAD_AFTER_LEASES * self.settings.lease_s))

    def keep_alive(self) -> Callable[[], None]:
        """Heartbeat (and key reload) from a thread, for listeners without a worker loop; the stopper."""
        if self.heartbeat is None:
            return lambda: None
        return self.heartbeat.beside(self.worker_id)

    def close(self) -> None:
        """Release the thread pool, HTTP connections and database connections."""
        self.scheduler.close()
        self.client.close()
        self.dispatch.close()
        self.repo.close()


"""Consumers of the events outbox (issue 10/12): Python hooks and signed webhooks.

Hooks run in the process that committed the transition: each ``Engine`` reads the events its own
worker id wrote, after each tick, callback and operator action, and calls the subscribers.
A hook that raises is logged and changes nothing: the transition is committed already.

Webhooks are delivered by whichever worker claims them (``Outbox.claim``: a lease, in order per
attempt), at least once: an event is marked delivered only after a 2xx, so a worker killed
mid-send leaves a lease that expires and the next worker sends it again (receivers deduplicate
on ``webhook-id``). No answer, 408, 429 and 5xx are retried at durable times on the engine clock
(exponential backoff with jitter; a longer Retry-After wins); other answers, or the last allowed
try, dead-letter the event until ``redeliver``.
"""
from __future__ import annotations

import builtins
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from engine.config import WebhookSettings
from engine.core.events import Event, EventPage, event_type, event_types, may_have_type, to_event
from engine.core.intake import check_flag, check_whole_number
from engine.errors import InvalidInputError
from engine.tracing import step_context
from persistence.outbox import Outbox, OutboxEvent
from states.model import State

log = logging.getLogger(__name__)

Hook = Callable[[Event], object]
#: The consent URLs of the attempts (id -> history_seq of their redirect) that still wait at that
#: redirect, by id; an attempt that has moved on is left out.
ConsentLookup = Callable[[Mapping[str, int]], Mapping[str, str]]

_RETRIED = frozenset({408, 425, 429})
# The largest event sequence number: ``events.seq`` is a signed 64-bit integer on both backends.
# A larger cursor used to reach the driver (OverflowError on SQLite, DataError on PostgreSQL).
MAX_SEQ = 2**63 - 1


class SendOutcome(Protocol):
    """What one webhook send produced (``engine.clients.webhooks.WebhookResponse``)."""

    @property
    def status(self) -> int | None: ...  # noqa: D102 - see the class docstring
    @property
    def retry_after(self) -> float | None: ...  # noqa: D102
    @property
    def error(self) -> str | None: ...  # noqa: D102


class WebhookPort(Protocol):
    """The webhook sender as the core sees it (``engine.clients.webhooks.WebhookSender``)."""

    settings: WebhookSettings

    @property
    def timeouts(self) -> tuple[float, float]: ...  # noqa: D102 - (connect, read) seconds

    def send(self, webhook_id: str, body: str) -> SendOutcome: ...  # noqa: D102

    def close(self) -> None: ...  # noqa: D102


class DeliveryObserver(Protocol):
    """Told of every webhook send (``engine.web.metrics.Metrics``; the core imports no metrics library)."""

    def delivery(self, outcome: str, seconds: float) -> None:
        """Record one send: ``delivered``, ``retried`` or ``dead_lettered``, and how long it took."""


class _NoDeliveryObserver:
    def delivery(self, outcome: str, seconds: float) -> None:
        """Do nothing."""


def _waits_at_redirect(row: OutboxEvent) -> bool:
    """Is ``row`` a redirect its attempt still waits at (so its event carries the consent URL)?"""
    return row.trigger == "redirect" and row.attempt_state == "REDIRECTED" \
        and row.attempt_history_seq == row.history_seq


def body_of(event: Event) -> str:
    """The exact JSON text that is signed and sent (compact, keys sorted: stable across sends)."""
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True)


def retry_delay(settings: WebhookSettings, tries: int, retry_after: float | None,
                rng: random.Random) -> float:
    """Seconds before try ``tries + 1``: backoff doubling from ``backoff_initial`` (the upper half
    jittered, so receivers that failed together are not hit together), or a longer Retry-After."""
    window = min(settings.backoff_max, settings.backoff_initial * 2.0 ** max(0, tries - 1))
    delay = window / 2 + rng.uniform(0, window / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_after_max))
    return delay


class EventDispatcher:
    """Hooks and webhook delivery for one ``Engine`` (its outbox, worker id, clock and sender)."""

    def __init__(self, outbox: Outbox, *, worker_id: str, clock: Callable[[], datetime],
                 consent_url: ConsentLookup, webhooks: WebhookPort | None = None,
                 lease_s: float = 120.0, rng: random.Random | None = None,
                 observer: DeliveryObserver | None = None) -> None:
        self.outbox = outbox
        self.observer: DeliveryObserver = observer or _NoDeliveryObserver()
        self.worker_id = worker_id
        self.clock = clock
        self.consent_url = consent_url
        self.webhooks = webhooks
        self.lease_s = lease_s
        self.rng = rng or random.Random()
        self._hooks: builtins.list[tuple[Hook, frozenset[str] | None]] = []
        self._cursor: int | None = None
        self._lock = threading.Lock()
        if webhooks is not None and sum(webhooks.timeouts) >= lease_s:
            raise InvalidInputError(
                "PROVISION_WEBHOOK_TIMEOUT_SECONDS",
                f"a webhook send may take {sum(webhooks.timeouts):g}s, not shorter than the "
                f"{lease_s:g}s lease", hint="Lower the webhook timeout or raise PROVISION_LEASE_SECONDS.")

    # --- reading ---------------------------------------------------------------------------------

    def event(self, row: OutboxEvent) -> Event:
        """The ``Event`` of an outbox row (the consent URL looked up only for redirects)."""
        return self.to_events([row])[0]

    def to_events(self, rows: Sequence[OutboxEvent]) -> builtins.list[Event]:
        """The ``Event`` of each row, the consent URLs of all its redirects looked up at once.

        One lookup per page, not one per redirect: read one by one, the lookups cost the feed
        about 0.9 ms of CPU per attempt on PostgreSQL, more than the rest of the page.
        """
        waiting = {r.attempt_id: r.history_seq for r in rows if _waits_at_redirect(r)}
        urls = self.consent_url(waiting) if waiting else {}
        return [to_event(r, urls.get(r.attempt_id) if _waits_at_redirect(r) else None) for r in rows]

    def events(self, after: int = 0, limit: int = 100,
               types: Iterable[str] | str | None = None) -> EventPage:
        """The feed: events after cursor ``after``, oldest first; only those of ``types`` if given.

        With ``types`` the database returns only the rows that may have one of them (their
        triggers), so a reader of redirects does not fetch and build every other event; pages
        are read until ``limit`` events of those types are found or the feed ends. Then the
        page's ``cursor`` is the end of what was read, so the next read does not scan again the
        events of other types since the last match.
        """
        check_whole_number("after", after, 0, MAX_SEQ, "a sequence number")
        check_whole_number("limit", limit, 1, 10_000, "a number")
        wanted = event_types(types)
        if wanted is None:
            events = self.to_events(self.outbox.read(after, limit))
            return EventPage(events, events[-1].seq if events else after)
        triggers, to_provisioned = may_have_type(wanted)
        found: builtins.list[OutboxEvent] = []
        while len(found) < limit:
            rows, end = self.outbox.read_matching(
                after, limit, triggers=triggers, or_dest=State.PROVISIONED.value if to_provisioned else None)
            found += [r for r in rows if event_type(r) in wanted][:limit - len(found)]
            if len(rows) < limit:
                if len(found) < limit:  # nothing more of these types up to the feed's end
                    after = max(after, end)
                break
            after = rows[-1].seq
        return EventPage(self.to_events(found), found[-1].seq if len(found) == limit else after)

    # --- hooks -----------------------------------------------------------------------------------

    def subscribe(self, hook: Hook, types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``hook(event)`` for events this engine commits from now on; returns an unsubscribe."""
        if not callable(hook):
            raise InvalidInputError("callback", "must be callable with one Event argument")
        entry = (hook, event_types(types))
        with self._lock:
            if self._cursor is None:
                self._cursor = self.outbox.last_seq()  # hooks see what is committed from now on
            self._hooks.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._hooks:
                    self._hooks.remove(entry)

        return unsubscribe

    def dispatch_hooks(self) -> int:
        """Run the hooks on this worker's events committed since the last call; returns events seen.

        Never raises: it runs after a commit the caller must hear about. When the database fails
        here the events stay after the cursor and reach the hooks at the next call.
        """
        if not self._hooks:
            return 0
        seen = 0
        with self._lock:  # one dispatcher at a time, so each event reaches each hook once
            try:
                while True:
                    rows = self.outbox.read(self._cursor or 0, 200, worker=self.worker_id)
                    for event in self.to_events(rows):
                        self._cursor = event.seq
                        self._call_hooks(event)
                    seen += len(rows)
                    if len(rows) < 200:
                        return seen
            except Exception:  # noqa: BLE001 - see the docstring
                log.exception("reading events for the hooks failed; they run at the next tick")
                return seen

    def _call_hooks(self, event: Event) -> None:
        for hook, wanted in list(self._hooks):
            if wanted is not None and event.type not in wanted:
                continue
            try:
                hook(event)
            except Exception:  # noqa: BLE001 - a hook's failure must not reach the engine
                name = getattr(hook, "__qualname__", type(hook).__name__)
                log.exception("event hook %s failed on %s #%d (attempt %s); the event is not retried",
                              name, event.type, event.seq, event.attempt_id)

    def after_commit(self, now: datetime) -> int:
        """After a tick: hooks, then due webhooks; returns deliveries. Never raises: the steps are
        committed, and whatever failed here (the database, say) is retried at the next tick."""
        self.dispatch_hooks()
        try:
            return self.deliver(now)
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("webhook delivery failed; it is retried at the next tick")
            return 0

    # --- webhooks --------------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None, *, max_batches: int = 5) -> int:
        """Send due webhook events (a few batches at most); returns how many were delivered."""
        if self.webhooks is None:
            return 0
        delivered = 0
        for _ in range(max_batches):
            at = now or self.clock()
            batch = self.outbox.claim(at, self.worker_id, at + timedelta(seconds=self.lease_s),
                                      self.webhooks.settings.batch_size)
            for i, row in enumerate(batch):
                status = self._send(row)
                if status is not None and 200 <= status < 300:
                    delivered += 1
                elif status is None:
                    # No answer (down, black-holed): the others would wait out the same timeouts
                    # and hold up this worker's steps. Give them back untried for the next pass.
                    for rest in batch[i + 1:]:
                        self.outbox.release(rest.seq, self.worker_id)
                    return delivered
            if len(batch) < self.webhooks.settings.batch_size:
                break
        return delivered

    def _send(self, row: OutboxEvent) -> int | None:
        """Send one claimed event and record the outcome; returns the HTTP status (None: no answer)."""
        assert self.webhooks is not None
        event = self.event(row)
        started = time.monotonic()  # a duration, not a time of day: the engine clock is not for this
        with step_context(row.attempt_id, row.attempt_state):  # the send's span names the attempt
            outcome = self.webhooks.send(event.webhook_id, body_of(event))
        seconds = time.monotonic() - started
        tries = row.tries + 1
        at = self.clock()
        status = outcome.status
        if status is not None and 200 <= status < 300:
            self.outbox.mark_delivered(row.seq, self.worker_id, now=at, tries=tries)
            self.observer.delivery("delivered", seconds)
            return status
        error = outcome.error or f"HTTP {status}"
        transient = status is None or status in _RETRIED or status >= 500
        settings = self.webhooks.settings
        if transient and tries < settings.max_tries:
            delay = retry_delay(settings, tries, outcome.retry_after, self.rng)
            self.outbox.mark_retry(row.seq, self.worker_id, at=at + timedelta(seconds=delay), tries=tries,
                                   error=error)
            self.observer.delivery("retried", seconds)
            log.warning("webhook %s #%d not delivered (%s); try %d of %d in %.0fs", event.type, event.seq,
                        error, tries + 1, settings.max_tries, delay)
        else:
            self.outbox.mark_dead(row.seq, self.worker_id, tries=tries, error=error)
            self.observer.delivery("dead_lettered", seconds)
            log.error("webhook %s #%d dead-lettered after %d tr%s (%s); `provision events redeliver %d`",
                      event.type, event.seq, tries, "y" if tries == 1 else "ies", error, event.seq)
        return status

    def redeliver(self, seq: int | None = None, *, failed: bool = False) -> int:
        """Send event ``seq`` again (any state), or every dead-lettered one with ``failed``."""
        check_flag("failed", failed)  # a truthy "no" would resend every dead-lettered event
        if seq is not None:
            # Before, a string reached the SQL comparison: no match (0) on SQLite, a
            # ProgrammingError on PostgreSQL ("operator does not exist: bigint = character varying").
            check_whole_number("seq", seq, 1, MAX_SEQ, "an event sequence number")
        if (seq is None) == (not failed):
            raise InvalidInputError("redeliver", "give an event sequence number or failed=True (not both)")
        return self.outbox.redeliver(now=self.clock(), seq=seq, failed=failed)

    def close(self) -> None:
        """Close the webhook sender's connections."""
        if self.webhooks is not None:
            self.webhooks.close()

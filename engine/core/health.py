"""Health checks (issue 10/12 must-have 5): ``Engine.check(id)`` and ``provision check``.

A check asks the platform about the instance (GET ``/instances/{id}``) and lets the pure judge
(``states.health.judge_instance``) decide. Where the engine owns the tokens (``renewal_owner``
engine), a healthy instance is then checked at the provider as well (``states.health.provider_check``):
a QuickBooks CompanyInfo read with the user's token, which rotates nothing; a 401 there makes the
connection unhealthy with reason ``provider_rejected``. The result is recorded on the attempt (``health``,
``health_reason``, ``last_check_at``). When the instance *becomes* unhealthy, the check also
writes a ``PROVISIONED --check--> PROVISIONED`` history row in the same transaction; the events
trigger turns that row into ``connection.unhealthy`` (``engine.core.events``), so hooks, the feed
and webhooks learn it like any other transition. A check that finds it still broken for the same
reason only updates ``last_check_at``.

A transient platform error (timeout, 5xx, 429) is no verdict: it raises, and nothing is recorded.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.errors import ConcurrentUpdateError, InvalidTransitionError, NotFoundApiError
from persistence.repository import Repository
from persistence.writes import transition_write
from states.attempt import Attempt, HistoryEntry
from states.health import PROVIDER_REJECTED, UNHEALTHY, Verdict, judge_instance, needs_event, provider_check
from states.model import State, Trigger
from states.ports import ClientPort

log = logging.getLogger(__name__)


class HealthChecker:
    """Checks PROVISIONED attempts' instances and records the verdicts."""

    def __init__(self, repo: Repository, client: ClientPort, *, clock: Callable[[], datetime],
                 worker_id: str) -> None:
        self.repo = repo
        self.client = client
        self.clock = clock
        self.worker_id = worker_id

    def ask(self, attempt: Attempt) -> Verdict:
        """The judge's verdict on the platform's answer about ``attempt``'s instance."""
        if attempt.state is not State.PROVISIONED or not attempt.instance_id:
            raise InvalidTransitionError(
                f"cannot check attempt {attempt.id} in state {attempt.state}: only a PROVISIONED "
                "attempt has an instance to check")
        answer: dict[str, Any] | None
        try:
            answer = self.client.get_instance(attempt.instance_id)
        except NotFoundApiError:
            answer = None
        verdict = judge_instance(answer)
        if not verdict.healthy or (check := provider_check(attempt)) is None:
            return verdict
        # The engine owns the tokens: the platform cannot know whether the provider still takes
        # them, so ask the provider too, by a read that spends and rotates nothing.
        accepted = self.client.check_provider_token(check.realm_id, sandbox_company=check.sandbox_company,
                                                    access_token=check.access_token, oauth1=check.oauth1)
        return verdict if accepted else Verdict(UNHEALTHY, PROVIDER_REJECTED)

    def check(self, attempt_id: str, read: Callable[[str], Attempt]) -> Attempt:
        """Check one attempt (``read`` looks it up) and record the result; returns it re-read."""
        attempt = read(attempt_id)
        verdict = self.ask(attempt)
        for _ in range(5):
            now = self.clock()
            if not needs_event(attempt.health, verdict, attempt.health_reason):
                self.repo.record_health(attempt.id, health=verdict.health, reason=verdict.reason, at=now)
                return read(attempt_id)
            if self._record_unhealthy(attempt, verdict, now):
                log.warning("attempt %s: instance %s is unhealthy (%s)", attempt.id, attempt.instance_id,
                            verdict.reason)
                return read(attempt_id)
            attempt = read(attempt_id)  # a worker holds or moved it: look again
            if attempt.state is not State.PROVISIONED:
                return attempt
        raise ConcurrentUpdateError(f"attempt {attempt_id} kept changing during its check; try again")

    def _record_unhealthy(self, attempt: Attempt, verdict: Verdict, now: datetime) -> bool:
        if attempt.lease_owner is not None and attempt.lease_expires_at is not None \
                and attempt.lease_expires_at > now:
            # A worker holds it (a renewal in flight): bumping the version now would discard the
            # worker's write (a rotated token!). Record nothing; the caller tries again later.
            return False
        entry = HistoryEntry.after(attempt, Trigger.CHECK.value, State.PROVISIONED, now,
                                   worker=self.worker_id, outcome="unhealthy", note=verdict.reason)
        write = transition_write(
            attempt, entry, owner=None, now=now, next_run_at=attempt.next_run_at,
            changes={"health": verdict.health, "health_reason": verdict.reason, "last_check_at": now},
            failure_reason=attempt.failure_reason, last_error=attempt.last_error)
        # Not a step: keep the renewal's retry counters as they are (transition_write resets them).
        write.values.update(runs=attempt.runs, failures=attempt.failures)
        return self.repo.apply(write)

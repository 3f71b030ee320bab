"""Rotated tokens that did not reach the database with their own step (issue 16 items 1 and 5).

Once the provider has rotated a token the old one is spent. ``RotatedTokens`` keeps the new one
when its renewal's commit could not store it: in the token spool when the database refuses it
(``engine.core.spool``), and as a complete renewal when the transition lost its lease or comes back
from the spool (``recover``). ``StepRunner`` owns one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from engine.core.spool import TokenSpool, renewal_changes
from persistence.repository import Repository
from persistence.writes import transition_write
from states.attempt import HistoryEntry
from states.decisions import Advance, Decision
from states.model import State, Trigger

log = logging.getLogger(__name__)


def rotates(decision: Decision) -> bool:
    """A decision that carries a token the provider already rotated (the old one is spent)."""
    return isinstance(decision, Advance) and decision.trigger is Trigger.RENEW


class RotatedTokens:
    """Spools, drains and recovers rotated tokens for one worker (``worker_id`` signs the history)."""

    def __init__(self, repo: Repository, spool: TokenSpool | None, *, clock: Callable[[], datetime],
                 worker_id: str) -> None:
        self.repo = repo
        self.token_spool = spool
        self.clock = clock
        self.worker_id = worker_id

    def spool(self, decisions: Iterable[tuple[str, Decision]]) -> None:
        """Spool the rotated tokens among ``decisions`` (attempt id, decision) that were not stored."""
        for attempt_id, decision in decisions:
            if rotates(decision) and self.token_spool is not None:
                assert isinstance(decision, Advance)
                path = self.token_spool.keep(attempt_id, decision.secrets, decision.changes)
                log.error("attempt %s: the database refused the rotated token; kept in the spool (%s)",
                          attempt_id, path.name)

    def drain(self) -> int:
        """Write spooled renewals into the database (each tick, before claiming); returns how many."""
        if self.token_spool is None:
            return 0
        drained = 0
        for entry in self.token_spool.pending():
            changes = renewal_changes(entry.changes)
            if self.recover(entry.attempt_id, entry.secrets, changes, note="kept in the token spool"):
                log.info("attempt %s: the spooled renewal reached the database", entry.attempt_id)
            self.token_spool.done(entry)  # stored now, or the row already holds this renewal or a newer one
            drained += 1
        return drained

    def recover(self, attempt_id: str, secrets: dict[str, Any], changes: dict[str, Any], *,
                note: str) -> bool:
        """Store a renewal whose own transition was lost, as a complete renewal (issue 16 item 5).

        A PROVISIONED row gets the renew transition (history row and event included) with the
        token's ``refresh_time``/``next_renewal_at``, due at once so the push follows; guarded by
        version only, whoever holds the lease. A row that already holds this renewal or a newer
        one is left alone; a row in another state only keeps the token (``merge_secrets``).
        Returns whether anything was written.
        """
        stamp = changes.get("refresh_time")
        for _ in range(10):
            current = self.repo.get(attempt_id)
            if current is None or (current.refresh_time and stamp and current.refresh_time >= stamp):
                return False
            now = self.clock()
            if current.state is not State.PROVISIONED:
                return self.repo.merge_secrets(attempt_id, secrets, now=now)
            entry = HistoryEntry.after(current, Trigger.RENEW.value, State.PROVISIONED, now,
                                       worker=self.worker_id, note=note)
            write = transition_write(current, entry, owner=None, now=now, next_run_at=now,
                                     changes={**changes, "renewals": current.renewals + 1},
                                     secret_updates=secrets)
            if self.repo.apply(write):
                return True
        return False

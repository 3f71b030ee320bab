"""Realm claims of callback steps (``states.realm``): one write per tick instead of one per step.

A callback that names a realm (a QuickBooks company) claims it before the create step's POST, so
that two attempts never connect one company twice. The race-safe claim (``Repository.claim_realm``)
is a write transaction of its own; on SQLite that was the costliest part of a create step after its
HTTP call (bench/README.md). So each tick first claims, in ONE transaction, the realms of its batch's
callback steps that nobody holds (``Repository.claim_free_realms``); a step whose attempt got its
realm there needs no write of its own. Every other case (a realm held by another attempt, a stale
claim to take over, ``--replace``, a repeated step) takes the per-step path, unchanged. The claims
are durable before any step of the tick makes a platform call, exactly as the per-step claim is.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from engine.core.outage import database_error
from persistence.repository import Repository
from states.attempt import Attempt
from states.model import State
from states.realm import NOT_LIVE_VALUES, realm_of

log = logging.getLogger(__name__)


class RealmClaims:
    """Claims realms for the steps of one worker: ``prepare`` per tick, ``claim`` per step."""

    def __init__(self, repo: Repository, *, clock: Callable[[], datetime]) -> None:
        self.repo = repo
        self.clock = clock
        # The attempts of the current tick that claimed their realm in its batch write. Replaced
        # (not updated) by each tick, so nothing claimed in an earlier tick is trusted later.
        self._held: frozenset[str] = frozenset()

    def prepare(self, batch: Sequence[Attempt]) -> None:
        """Claim, in one transaction, the free realms of the callback steps in ``batch``."""
        wanted = [(a.element_key, realm, a.id) for a in batch
                  if a.state is State.CALLBACK_RECEIVED and (realm := realm_of(a)) is not None]
        self._held = frozenset()
        if len(wanted) < 2:
            return  # one step claims as cheaply on its own
        try:
            self._held = frozenset(self.repo.claim_free_realms(wanted, now=self.clock()))
        except Exception as exc:  # noqa: BLE001 - an optimisation: each step claims on its own instead
            log.warning("batch realm claim failed (%s); each step claims its own",
                        database_error(exc) or type(exc).__name__)

    def claim(self, attempt: Attempt, realm_id: str) -> str | None:
        """``StepPorts.claim_realm``: None when ``attempt`` holds ``realm_id`` now, else the live holder."""
        if attempt.id in self._held:
            return None
        return self.repo.claim_realm(attempt.element_key, realm_id, attempt.id, replaces=attempt.replaces,
                                     not_live=NOT_LIVE_VALUES, now=self.clock())

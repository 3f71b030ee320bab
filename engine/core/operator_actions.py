"""Operator actions: cancel, restart, re-authorise and disconnect an attempt.

Each is one guarded transition written with the operator's name in the history (``actor``), retried
a few times when the attempt moves meanwhile. ``Engine`` delegates its operator methods here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from engine.config import PRINTABLE_RE
from engine.errors import (
    ConcurrentUpdateError,
    DuplicateConnectionError,
    InvalidInputError,
    InvalidTransitionError,
)
from persistence.customer_guard import CustomersHeldError
from persistence.repository import Repository
from persistence.writes import transition_write
from states.attempt import Attempt, HistoryEntry
from states.exactly_once import create_in_flight
from states.machine import next_state
from states.model import CANCELLABLE, FailureReason, Flow, State, Trigger


class OperatorActions:
    """Moves an operator asks for. ``get`` reads an attempt (``AttemptNotFoundError`` if unknown);
    after a move, ``wake`` cuts the worker's wait short and ``after_commit`` runs the event hooks."""

    def __init__(self, repo: Repository, *, clock: Callable[[], datetime], worker_id: str,
                 get: Callable[[str], Attempt], wake: Callable[[], None],
                 after_commit: Callable[[], object]) -> None:
        self.repo = repo
        self.clock = clock
        self.worker_id = worker_id
        self.get = get
        self.wake = wake
        self.after_commit = after_commit

    def _move(self, attempt_id: str, trigger: Trigger, *, reason: str | None,
              next_run_at: Callable[[], datetime | None], actor: str | None = None,
              allowed: Callable[[Attempt], None] | None = None) -> Attempt:
        check_actor(actor)
        for _ in range(5):
            attempt = self.get(attempt_id)
            if allowed is not None:
                allowed(attempt)  # checked on each try: the attempt may have moved meanwhile
            dest = next_state(trigger, attempt.state)
            if dest is None:
                raise InvalidTransitionError(
                    f"cannot {trigger.value} attempt {attempt.id} in state {attempt.state}"
                )
            now = self.clock()
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
            try:
                applied = self.repo.apply(write, revive=dest is State.NEW)
            except CustomersHeldError as exc:  # restart/reauthorize: the customer connected anew meanwhile
                raise DuplicateConnectionError(str(attempt.customer), attempt.element_key,
                                               *exc.held[attempt.id]) from None
            if applied:
                self.wake()
                self.after_commit()
                return self.get(attempt_id)
        raise ConcurrentUpdateError(f"attempt {attempt_id} kept changing; try again")

    def cancel(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a non-terminal attempt to FAILED(cancelled); a PROVISIONED, FAILED or DISCONNECTED
        one is refused (``InvalidTransitionError``): ``disconnect`` ends a connection."""
        return self._move(attempt_id, Trigger.FAIL, reason=FailureReason.CANCELLED.value,
                          next_run_at=lambda: None, actor=actor, allowed=check_cancellable)

    def reauthorize(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """FAILED --reauthorize--> NEW for an attempt with an instance and a consent flow."""
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
        return self._move(attempt.id, Trigger.REAUTHORIZE, reason=None, next_run_at=self.clock,
                          actor=actor)

    def restart(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a FAILED attempt back to NEW, due at once."""
        return self._move(attempt_id, Trigger.RESTART, reason=None, next_run_at=self.clock, actor=actor)

    def disconnect(self, attempt_id: str, *, actor: str | None = None) -> Attempt:
        """Move a PROVISIONED (or FAILED) attempt to DISCONNECTING, due at once."""
        return self._move(attempt_id, Trigger.DISCONNECT, reason=None, next_run_at=self.clock,
                          actor=actor)


def check_cancellable(attempt: Attempt) -> None:
    """Refuse to cancel an attempt that is no longer on its way (``states.CANCELLABLE``)."""
    if attempt.state in CANCELLABLE:
        return
    if attempt.state is State.PROVISIONED:
        hint = (f"Attempt {attempt.id} is connected (instance {attempt.instance_id or '(none)'}): to end "
                f"the connection, disconnect it (`provision disconnect {attempt.id}`, Engine.disconnect), "
                "which revokes the token and deletes the instance.")
    else:
        hint = "Only attempts still on their way (NEW, TOKEN_ISSUED, REDIRECTED, CALLBACK_RECEIVED, " \
               "DISCONNECTING) can be cancelled."
    raise InvalidTransitionError(f"cannot cancel attempt {attempt.id} in state {attempt.state}", hint=hint)


def check_actor(actor: str | None) -> None:
    """An operator's name as the history records it: printable, 1 to 100 characters."""
    if actor is not None and not (isinstance(actor, str) and 0 < len(actor) <= 100
                                  and PRINTABLE_RE.fullmatch(actor)):
        raise InvalidInputError("actor", "must be printable text of 1 to 100 characters")

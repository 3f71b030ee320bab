"""Reading attempts: look-ups by id or prefix, filtered lists, keyset pages, counts and history.

``Engine`` delegates its read-only methods here (``get``, ``list``, ``find``...); nothing in this
module writes.
"""
from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime, timedelta

from engine.core.intake import attempt_id_to_look_up, validate_list, validate_reason
from engine.core.lookup import resolve_attempt_id
from engine.errors import AttemptNotFoundError, InvalidInputError
from persistence.attempt_filter import AttemptFilter
from persistence.repository import Repository
from states.attempt import Attempt, HistoryEntry
from states.model import State


class AttemptQueries:
    """The read side of the ``Engine``: every method validates its input, then asks the repository."""

    def __init__(self, repo: Repository, *, clock: Callable[[], datetime]) -> None:
        self.repo = repo
        self.clock = clock

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
        """Attempts, newest first, filtered (see ``Engine.list``)."""
        f = validate_list(state, element, older_than, newer_than, limit, customer)
        if created_before is not None and not (isinstance(created_before, datetime)
                                               and created_before.tzinfo is not None):
            raise InvalidInputError("created_before", "must be a timezone-aware datetime")
        now = self.clock()
        before = [b for b in (created_before, now - f.older_than if f.older_than is not None else None) if b]
        return self.repo.list(
            state=f.state, element=f.element, customer=f.customer, limit=f.limit,
            reason=validate_reason(reason),
            created_before=min(before) if before else None,
            created_after=now - f.newer_than if f.newer_than is not None else None,
        )

    def find(self, selection: AttemptFilter, *, after: tuple[datetime, str] | None = None,
             limit: int = 50) -> builtins.list[Attempt]:
        """At most ``limit`` (1-10,000) attempts of ``selection`` after the keyset cursor ``after``."""
        if not 1 <= limit <= 10_000:
            raise InvalidInputError("limit", f"must be from 1 to 10000, got {limit}")
        return self.repo.find(selection, after=after, limit=limit)

    def history(self, attempt_id: str) -> builtins.list[HistoryEntry]:
        """The attempt's transitions in order (``AttemptNotFoundError`` for an unknown id)."""
        self.get(attempt_id)
        return self.repo.history(attempt_id)


def redirect_url(attempt: Attempt) -> str | None:
    """The consent URL to send the user to, while the attempt is REDIRECTED."""
    return attempt.secrets.get("redirect_url") if attempt.state is State.REDIRECTED else None

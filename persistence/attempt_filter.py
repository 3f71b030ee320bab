"""Attempt selections as SQL: every filter a predicate, pages by keyset, counts by ``COUNT(*)``.

``AttemptFilter`` is what the console's filter form (and a bulk selection) asks for: states,
element, customer, failure reason, creation time, a search (an id prefix or a piece of the name)
and a "view" (``retrying``, ``attention``...). ``where`` turns it into one SQL condition, so a page
of a sparse filter over 100,000 attempts is one indexed query with a LIMIT, never a scan in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence.quarantine import UNREADABLE
from persistence.schema import attempts
from states.model import FailureReason, State

#: States whose attempts wait for a retry when their ``failures`` count is above zero.
RETRYING_STATES = (State.NEW, State.TOKEN_ISSUED, State.CALLBACK_RECEIVED)
VIEWS = ("", "attention", "retrying", "failed", "reauth", "unhealthy")


@dataclass(frozen=True)
class AttemptFilter:
    """A selection of attempts; empty fields do not filter."""

    states: tuple[State, ...] = ()
    element: str | None = None
    customer: str | None = None
    reason: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    id_prefix: str | None = None  # search: matches an id prefix ...
    name_part: str | None = None  # ... or a case-insensitive part of the name
    view: str = ""

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(v for v in VIEWS if v)}")


def _in(*states: State) -> Any:
    return attempts.c.state.in_([s.value for s in states])


def _quarantined() -> Any:
    # The parked row's stored error (persistence.quarantine); JSON text comparison works on both backends.
    return sa.cast(attempts.c.last_error, sa.Text).like(f'%"{UNREADABLE}"%')


def _view(view: str) -> Any:
    retrying = sa.and_(_in(*RETRYING_STATES), attempts.c.failures > 0)
    unhealthy = sa.and_(_in(State.PROVISIONED), attempts.c.health == "unhealthy")
    if view == "retrying":
        return retrying
    if view == "failed":
        return _in(State.FAILED)
    if view == "reauth":
        return sa.and_(_in(State.FAILED), attempts.c.failure_reason == FailureReason.RENEWAL_REJECTED.value)
    if view == "unhealthy":
        return unhealthy
    # attention: retrying, failed, unhealthy, or quarantined (secrets unreadable) while live.
    return sa.or_(retrying, _in(State.FAILED), unhealthy,
                  sa.and_(_in(*RETRYING_STATES, State.PROVISIONED), _quarantined()))


def where(f: AttemptFilter) -> Any:
    """The filter as one SQL condition (``sa.true()`` when nothing filters)."""
    c = attempts.c
    parts: list[Any] = []
    if f.states:
        parts.append(_in(*f.states))
    for column, value in ((c.element_key, f.element), (c.customer, f.customer), (c.failure_reason, f.reason)):
        if value is not None:
            parts.append(column == value)
    if f.created_after is not None:
        parts.append(c.created_at >= f.created_after)
    if f.created_before is not None:
        parts.append(c.created_at < f.created_before)
    search = []
    if f.id_prefix:
        search.append(c.id.startswith(f.id_prefix, autoescape=True))
    if f.name_part:
        search.append(sa.func.lower(c.name).contains(f.name_part.lower(), autoescape=True))
    if search:
        parts.append(sa.or_(*search))
    if f.view:
        parts.append(_view(f.view))
    return sa.and_(sa.true(), *parts)


def page_query(f: AttemptFilter, after: tuple[datetime, str] | None, limit: int) -> sa.Select[Any]:
    """Newest first, then id: the ``limit`` rows after the keyset cursor ``after`` (created_at, id)."""
    q = sa.select(attempts).where(where(f))
    if after is not None:
        at, attempt_id = after
        q = q.where(sa.or_(attempts.c.created_at < at,
                           sa.and_(attempts.c.created_at == at, attempts.c.id > attempt_id)))
    return q.order_by(attempts.c.created_at.desc(), attempts.c.id).limit(limit)


def count_query(f: AttemptFilter) -> sa.Select[Any]:
    """How many attempts the filter selects."""
    return sa.select(sa.func.count()).select_from(attempts).where(where(f))


"""The console's attempt filters, as one value, and paged reads that stay fast with 100,000 attempts.

``AttemptQuery`` is what the filter form says (state, element, customer, failure reason, age,
search, view). ``to_filter`` turns it into a ``persistence.attempt_filter.AttemptFilter``: every
filter is a SQL predicate, a page is one query in keyset order (newest first, then id) with a
LIMIT, and counts are ``COUNT(*)`` in the database (``Engine.find`` / ``Engine.count_matching``).
Nothing is filtered in Python, so a customer whose attempts are the oldest of 100,000 is found on
page one.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from engine.errors import InvalidInputError
from persistence.attempt_filter import RETRYING_STATES, AttemptFilter
from states.attempt import Attempt
from states.model import State

if TYPE_CHECKING:
    from engine.core.facade import Engine

PAGE_SIZE = 50
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: The age filter's choices: label, and (older_than, newer_than).
AGES: Mapping[str, tuple[str, timedelta | None, timedelta | None]] = {
    "": ("any age", None, None),
    "lt1h": ("created in the last hour", None, timedelta(hours=1)),
    "lt24h": ("created in the last 24 hours", None, timedelta(days=1)),
    "lt7d": ("created in the last 7 days", None, timedelta(days=7)),
    "gt1h": ("older than an hour", timedelta(hours=1), None),
    "gt24h": ("older than 24 hours", timedelta(days=1), None),
    "gt7d": ("older than 7 days", timedelta(days=7), None),
}
__all__ = ["AGES", "RETRYING_STATES", "VIEWS", "AttemptQuery", "Page", "Selection", "count", "read_page",
           "select"]
#: view -> its label (``AttemptQuery.states`` and ``matches`` say what each one selects)
VIEWS: Mapping[str, str] = {
    "": "all attempts",
    "attention": "needs attention",
    "retrying": "retrying",
    "failed": "failed",
    "reauth": "reauthorization required",
    "unhealthy": "unhealthy connections",
}
_TEXT_RE = re.compile(r"^[\w .@:/+-]{0,80}$")
_ID_PREFIX_RE = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
_CURSOR_RE = re.compile(r"^(\d+)~([0-9a-f-]{1,36})$")


def _field(args: Mapping[str, str], name: str) -> str:
    value = (args.get(name) or "").strip()
    if not _TEXT_RE.match(value):
        raise InvalidInputError(name, "may hold only letters, digits, spaces and . @ : / + - (80 at most)")
    return value


@dataclass(frozen=True)
class AttemptQuery:
    """A filtered, paged selection of attempts (the console's filter form and bulk selection)."""

    state: State | None = None
    element: str = ""
    reason: str = ""
    age: str = ""
    search: str = ""
    view: str = ""
    after: tuple[datetime, str] | None = None  # keyset cursor: continue after this (created_at, id)
    customer: str = ""  # the application's customer id (issue 10/12), filtered by the database

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> AttemptQuery:
        """Parse the form; ``InvalidInputError`` names the field that is wrong."""
        state_text = _field(args, "state").upper()
        try:
            state = State(state_text) if state_text else None
        except ValueError:
            raise InvalidInputError("state", f"must be one of {', '.join(s.value for s in State)}") from None
        age, view = _field(args, "age"), _field(args, "view")
        if age not in AGES:
            raise InvalidInputError("age", f"must be one of {', '.join(a for a in AGES if a)}")
        if view not in VIEWS:
            raise InvalidInputError("view", f"must be one of {', '.join(v for v in VIEWS if v)}")
        after = None
        cursor = args.get("after") or ""
        if cursor:
            match = _CURSOR_RE.match(cursor)
            if not match:
                raise InvalidInputError("after", "is not a cursor of this console; start from page one")
            after = (EPOCH + timedelta(microseconds=int(match[1])), match[2])
        return cls(state, _field(args, "element"), _field(args, "reason"), age, _field(args, "search"), view,
                   after, _field(args, "customer"))

    def params(self, *, with_cursor: bool = False) -> dict[str, str]:
        """The query as form/URL parameters (empty ones left out)."""
        out = {"state": self.state.value if self.state else "", "element": self.element,
               "reason": self.reason, "age": self.age, "search": self.search, "view": self.view,
               "customer": self.customer}
        if with_cursor and self.after is not None:
            out["after"] = cursor_text(*self.after)
        return {k: v for k, v in out.items() if v}

    @property
    def states(self) -> tuple[State, ...]:
        """The states to read; a view narrows the state filter."""
        by_view = {"retrying": RETRYING_STATES, "failed": (State.FAILED,), "reauth": (State.FAILED,),
                   "unhealthy": (State.PROVISIONED,),
                   "attention": (*RETRYING_STATES, State.FAILED, State.PROVISIONED)}.get(self.view)
        if by_view is None:
            # Every state, read state by state and merged: each read then walks the (state,
            # created_at) index instead of sorting the whole table (100,000 rows) per chunk.
            return (self.state,) if self.state is not None else tuple(State)
        if self.state is not None:
            return (self.state,) if self.state in by_view else ()
        return by_view

    def to_filter(self, now: datetime) -> AttemptFilter:
        """The query as a database filter (every predicate runs in SQL); ``now`` anchors the age."""
        _, older, newer = AGES[self.age]
        needle = self.search.lower()
        return AttemptFilter(
            states=(self.state,) if self.state is not None else (),
            element=self.element or None, customer=self.customer or None, reason=self.reason or None,
            created_after=now - newer if newer is not None else None,
            created_before=now - older if older is not None else None,
            id_prefix=needle if _ID_PREFIX_RE.match(needle) else None, name_part=needle or None,
            view=self.view)


def cursor_text(created_at: datetime, attempt_id: str) -> str:
    """A keyset cursor as text: microseconds since the epoch and the id."""
    return f"{(created_at - EPOCH) // timedelta(microseconds=1)}~{attempt_id}"


@dataclass
class Page:
    """One page of a query: its rows, the cursor of the next page, and how many match in all."""

    rows: list[Attempt] = field(default_factory=list)
    next_after: str | None = None
    total: int = 0


def read_page(engine: Engine, query: AttemptQuery, *, size: int | None = None) -> Page:
    """The page of ``query`` after its cursor: at most ``size`` rows (default ``PAGE_SIZE``, read at
    call time so tests can lower it), one indexed query with a LIMIT and one ``COUNT(*)``."""
    size = PAGE_SIZE if size is None else size
    selection = query.to_filter(engine.now())
    rows = engine.find(selection, after=query.after, limit=size + 1)  # one more: is there a next page?
    page = Page(rows=rows[:size], total=engine.count_matching(selection))
    if len(rows) > size:
        tail = page.rows[-1]
        page.next_after = cursor_text(tail.created_at, tail.id)
    return page


def count(engine: Engine, query: AttemptQuery) -> int:
    """How many attempts match ``query`` (its cursor ignored)."""
    return int(engine.count_matching(query.to_filter(engine.now())))


@dataclass(frozen=True)
class Selection:
    """The attempts a bulk action would touch: at most ``cap`` of them, in list order."""

    ids: list[str]
    more: bool  # more attempts match than ``cap``


def select(engine: Engine, query: AttemptQuery, cap: int) -> Selection:
    """The first ``cap`` matches of ``query`` from its first page on (one query with a LIMIT)."""
    rows = engine.find(replace(query, after=None).to_filter(engine.now()), limit=cap + 1)
    return Selection([a.id for a in rows[:cap]], len(rows) > cap)

"""The console's attempt filters, as one value, and paged reads that stay fast with 100,000 attempts.

``AttemptQuery`` is what the filter form says (state, element, failure reason, age, search, view).
Reads go through ``Engine.list`` only, in keyset order (newest first, then id) with
``created_before``: never more than ``CHUNK`` rows per database read and ``SCAN_BUDGET`` rows per
page. State, element and age are filtered by the database; failure reason, search and "retrying"
(failures > 0) are filtered here, because ``Engine.list`` has no such parameters yet. When the
budget runs out first, the page says so and "Next" resumes the scan where it stopped (honest
paging instead of a slow page). ``Engine.list`` growing those filters only changes ``_pushdown``.
"""
from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from engine.errors import InvalidInputError
from persistence.quarantine import UNREADABLE
from states.attempt import Attempt
from states.model import FailureReason, State

if TYPE_CHECKING:
    from engine.core.facade import Engine

PAGE_SIZE = 50
CHUNK = 200
SCAN_BUDGET = 2000
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
RETRYING_STATES = (State.NEW, State.TOKEN_ISSUED, State.CALLBACK_RECEIVED)
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

    @property
    def is_pushed_down(self) -> bool:
        """Whether the database applies every filter (``matches`` then lets every row through)."""
        return not (self.reason or self.search
                    or self.view in ("retrying", "attention", "reauth", "unhealthy"))

    def matches(self, a: Attempt) -> bool:
        """The filters the database does not apply (see the module docstring)."""
        if self.reason and (a.failure_reason or "") != self.reason:
            return False
        if self.view in ("retrying", "attention") and a.state in RETRYING_STATES and a.failures == 0:
            # A quarantined row (secrets unreadable) has not failed yet but waits for an operator.
            if not (self.view == "attention" and (a.last_error or {}).get("kind") == UNREADABLE):
                return False
        if self.view in ("unhealthy", "attention") and a.state is State.PROVISIONED \
                and a.health != "unhealthy":
            # A connected attempt needs attention only when a health check says so, or when it is
            # quarantined.
            if not (self.view == "attention" and (a.last_error or {}).get("kind") == UNREADABLE):
                return False
        if self.view == "reauth" and a.failure_reason != FailureReason.RENEWAL_REJECTED.value:
            return False
        if self.search:
            needle = self.search.lower()
            is_prefix = _ID_PREFIX_RE.match(needle) is not None
            if not ((is_prefix and a.id.startswith(needle)) or needle in a.name.lower()):
                return False
        return True


def cursor_text(created_at: datetime, attempt_id: str) -> str:
    """A keyset cursor as text: microseconds since the epoch and the id."""
    return f"{(created_at - EPOCH) // timedelta(microseconds=1)}~{attempt_id}"


def _stream(engine: Engine, query: AttemptQuery, state: State, first: int) -> Iterator[Attempt]:
    """Attempts in ``state`` matching the database-side filters, newest first, after the cursor.

    The first read asks for ``first`` rows (what the caller expects to need), later ones for
    ``CHUNK``: every row read is decrypted by the repository, so reading ahead is not free.
    """
    _, older, newer = AGES[query.age]
    after, chunk = query.after, first
    while True:
        # created_before is exclusive: one microsecond more keeps the cursor's ties, skipped below.
        before = after[0] + timedelta(microseconds=1) if after is not None else None
        rows = engine.list(state, element=query.element or None, older_than=older, newer_than=newer,
                           limit=chunk, created_before=before, customer=query.customer or None)
        fresh = [r for r in rows if after is None or r.created_at < after[0] or r.id > after[1]]
        if not fresh:
            if len(rows) < chunk:
                return
            chunk *= 4  # a whole chunk of ties with the cursor (one start_many): read further
            continue
        yield from fresh
        if len(rows) < chunk:
            return
        after, chunk = (fresh[-1].created_at, fresh[-1].id), CHUNK


def _order(a: Attempt) -> tuple[timedelta, str]:
    return EPOCH - a.created_at, a.id  # newest first, then id (Repository.list's order)


@dataclass
class Page:
    """One page of a query: its rows, the cursor of the next page, and how much was read."""

    rows: list[Attempt] = field(default_factory=list)
    next_after: str | None = None
    scanned: int = 0
    budget_spent: bool = False


def _merged(engine: Engine, query: AttemptQuery, first: int) -> Iterator[Attempt]:
    """Every attempt the database-side filters let through, in order (several states merged)."""
    streams = [_stream(engine, query, s, max(1, min(first, CHUNK))) for s in query.states]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=_order)


def read_page(engine: Engine, query: AttemptQuery, *, size: int | None = None,
              budget: int | None = None) -> Page:
    """The page of ``query`` (after its cursor), at most ``size`` rows and ``budget`` rows read
    (defaults: ``PAGE_SIZE`` and ``SCAN_BUDGET``, read at call time so tests can lower them)."""
    size = PAGE_SIZE if size is None else size
    budget = SCAN_BUDGET if budget is None else budget
    page = Page()
    # Without filters applied here, one more row than the page tells whether there is a next one.
    first = size + 1 if query.is_pushed_down else CHUNK
    for attempt in _merged(engine, query, first):
        page.scanned += 1
        if query.matches(attempt):
            page.rows.append(attempt)
            if len(page.rows) > size:
                page.rows.pop()
                tail = page.rows[-1]
                page.next_after = cursor_text(tail.created_at, tail.id)
                return page
        if page.scanned >= budget:
            page.budget_spent = True
            page.next_after = cursor_text(attempt.created_at, attempt.id)
            return page
    return page


@dataclass(frozen=True)
class Selection:
    """The attempts a bulk action would touch: at most ``cap`` of them, in list order."""

    ids: list[str]
    more: bool  # more attempts match than ``cap`` (or than the scan budget allowed to read)


def select(engine: Engine, query: AttemptQuery, cap: int, *, budget: int = 10 * SCAN_BUDGET) -> Selection:
    """The first ``cap`` matches of ``query`` from its first page on, reading at most ``budget`` rows."""
    ids: list[str] = []
    for seen, attempt in enumerate(_merged(engine, replace(query, after=None), budget), start=1):
        if query.matches(attempt):
            if len(ids) == cap:
                return Selection(ids, True)
            ids.append(attempt.id)
        if seen >= budget:
            return Selection(ids, True)
    return Selection(ids, False)

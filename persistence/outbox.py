"""The events outbox (issue 10/12): the feed's reads and the webhook delivery state.

Rows are written by the ``history`` trigger of migration 0004, in the transaction of the
transition, so this module never inserts events: it reads them (joined with their history row and
the attempt's public columns), gives them their feed position on PostgreSQL (migration 0012,
``Outbox.position_new``) and moves their delivery state. An event's ``seq`` in this module and
above it is its position, the feed's cursor; the ``events.seq`` column only numbers the rows.
Delivery is leased like attempts: a worker claims a due event (``lease_owner``,
``lease_expires_at``), sends it and records the outcome with a write guarded by its lease; a
worker that dies leaves a lease that expires.
"""
from __future__ import annotations

import builtins
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence.database import AUTOCOMMIT_OPTIONS
from persistence.schema import attempts, events, history

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
DELIVERY_STATES = (PENDING, DELIVERED, DEAD)


@dataclass(frozen=True)
class OutboxEvent:
    """One event row with what the payload is computed from (no secrets: public columns only).

    ``reprovisioned`` is True when an earlier transition of the attempt already reached
    PROVISIONED (a PROVISIONED after that is a recovery). ``attempt_state`` and
    ``attempt_history_seq`` are the attempt's *current* values.
    """

    seq: int
    attempt_id: str
    history_seq: int
    created_at: datetime
    worker: str | None
    instance_id: str | None
    trigger: str
    source: str
    dest: str
    note: str | None
    error: dict[str, Any] | None
    element_key: str
    flow: str
    name: str
    tags: tuple[str, ...]
    attempt_state: str
    attempt_history_seq: int
    reprovisioned: bool
    delivery: str
    tries: int
    last_error: str | None
    customer: str | None = None


_earlier = history.alias("earlier")
_e, _h, _a = events.c, history.c, attempts.c
_SELECT = sa.select(
    _e.position.label("seq"), _e.attempt_id, _e.history_seq, _e.created_at, _e.worker, _e.instance_id,
    _h.trigger, _h.source, _h.dest, _h.note, _h.error,
    _a.element_key, _a.flow, _a.name, _a.tags, _a.state.label("attempt_state"),
    _a.history_seq.label("attempt_history_seq"),
    sa.exists().where(_earlier.c.attempt_id == _e.attempt_id, _earlier.c.seq < _e.history_seq,
                      _earlier.c.dest == "PROVISIONED").label("reprovisioned"),
    _e.delivery, _e.tries, _e.last_error, _a.customer,
).select_from(
    events.join(history, sa.and_(_h.attempt_id == _e.attempt_id, _h.seq == _e.history_seq))
    .join(attempts, _a.id == _e.attempt_id)
)


_FIELDS = tuple(c.name for c in _SELECT.selected_columns)
_PAGE = _SELECT.where(_e.position > sa.bindparam("after")).order_by(_e.position).limit(sa.bindparam("limit"))
# Outbox.read's statements, built once (by: only one worker's events, only the given seqs).
_READS = {
    (by_worker, by_seqs): _PAGE.where(
        _e.worker == sa.bindparam("worker") if by_worker else sa.true(),
        _e.position.in_(sa.bindparam("seqs", expanding=True)) if by_seqs else sa.true())
    for by_worker in (False, True) for by_seqs in (False, True)
}


#: Events positioned per transaction of ``Outbox.position_new`` (a backlog takes several).
POSITION_BATCH = 5000
_ANY_UNPOSITIONED = sa.select(sa.literal(1)).where(_e.position.is_(None)).limit(1)
# Keyed by schema, as migration 0004's lock was, so that databases in different schemas (the tests)
# do not wait for each other.
_POSITIONING_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.events_position'))")
# In one statement, after the lock: its snapshot includes every earlier positioning's commit. The
# positions come from a sequence (migration 0013), taken in ``seq`` order (the outer select draws
# them row by row from the ordered, limited subquery), so none is ever handed out twice, even
# after a prune deleted the newest events.
_POSITION_BATCH = sa.text(
    "UPDATE events SET position = numbered.p FROM (SELECT waiting.seq, nextval('events_position_seq') AS p "
    "FROM (SELECT seq FROM events WHERE position IS NULL ORDER BY seq LIMIT :batch) AS waiting) AS numbered "
    "WHERE events.seq = numbered.seq")


def _row(r: Any) -> OutboxEvent:
    data = dict(r)
    data["tags"] = tuple(data["tags"] or ())
    data["reprovisioned"] = bool(data["reprovisioned"])
    return OutboxEvent(**data)


class Outbox:
    """Reads of the events feed and writes of the webhook delivery state on one database."""

    def __init__(self, db: sa.Engine) -> None:
        self.db = db
        self._sqlite = db.dialect.name == "sqlite"
        self._matching: dict[tuple[frozenset[str], str | None], sa.Select[Any]] = {}

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        # SQLite: no BEGIN IMMEDIATE for a read (persistence.database); PostgreSQL: a plain
        # connection whose implicit transaction is rolled back on close.
        with self.db.connect() as conn:
            yield conn.execution_options(**AUTOCOMMIT_OPTIONS) if self._sqlite else conn

    def position_new(self) -> int:
        """Give every committed event still without a position the next ones, in ``seq`` order;
        how many (PostgreSQL; on SQLite the trigger positions each event as it writes it).

        One transaction under a lock that only this takes (migration 0012), the positions drawn from
        a sequence (0013): readers see them all at once, after those of the transaction before, and
        none is ever handed out twice. Most calls find nothing to do and write nothing.
        """
        if self._sqlite:
            return 0
        with self._read() as conn:
            if conn.execute(_ANY_UNPOSITIONED).first() is None:
                return 0
        done = 0
        while True:
            with self.db.begin() as conn:
                conn.execute(_POSITIONING_LOCK)
                count = conn.execute(_POSITION_BATCH, {"batch": POSITION_BATCH}).rowcount
            done += count
            if count < POSITION_BATCH:
                return done

    def read(self, after: int = 0, limit: int = 100, *, worker: str | None = None,
             seqs: Sequence[int] | None = None) -> builtins.list[OutboxEvent]:
        """Events with ``seq > after`` in ``seq`` order (only ``worker``'s, or only ``seqs``, if given).

        What a reader sees is always a prefix of the sequence (migration 0004), so resuming from the
        last ``seq`` seen never skips an event.
        """
        q = _READS[(worker is not None, seqs is not None)]
        values = {"after": after, "limit": limit, "worker": worker,
                  "seqs": list(seqs) if seqs is not None else None}
        if seqs is None:  # given positions (a claim's) are positioned events already
            self.position_new()
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q, values).mappings()]

    def read_matching(self, after: int, limit: int, *, triggers: Collection[str],
                      or_dest: str | None = None) -> tuple[builtins.list[OutboxEvent], int]:
        """``read`` of the transitions by one of ``triggers`` (or, given ``or_dest``, to that state),
        and the highest ``seq`` visible to the same statement (0 when there is none).

        One statement, so one snapshot: the feed being a prefix of the sequence, every event up to
        that ``seq`` was visible to the page read, and a reader whose page is not full can resume
        there instead of after its last match.
        """
        key = (frozenset(triggers), or_dest)
        q = self._matching.get(key)
        if q is None:  # built once per filter: building it cost more CPU than running it
            page = (_SELECT.where(_e.position > sa.bindparam("after"), sa.or_(
                _h.trigger.in_(sorted(triggers)), sa.false() if or_dest is None else _h.dest == or_dest))
                .order_by(_e.position).limit(sa.bindparam("limit")).subquery("page"))
            end = (sa.select(sa.func.coalesce(sa.func.max(_e.position), 0).label("feed_end"))
                   .subquery("feed_end"))
            # LEFT JOIN from the one-row end: an empty page still brings the end back (seq NULL).
            q = self._matching[key] = (sa.select(end.c.feed_end, page)
                                       .select_from(end.outerjoin(page, sa.true())).order_by(page.c.seq))
        self.position_new()
        with self._read() as conn:
            rows = conn.execute(q, {"after": after, "limit": limit}).mappings().all()
        found = [_row({k: r[k] for k in _FIELDS}) for r in rows if r["seq"] is not None]
        return found, int(rows[0]["feed_end"])

    def last_seq(self) -> int:
        """The highest ``seq`` (position) so far (0 when there is none)."""
        self.position_new()
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.max(_e.position))).scalar() or 0)

    def counts(self) -> dict[str, int]:
        """How many events are in each delivery state."""
        with self._read() as conn:
            return {d: int(n) for d, n in conn.execute(
                sa.select(_e.delivery, sa.func.count()).group_by(_e.delivery))}

    def claim(self, now: datetime, owner: str, lease_until: datetime,
              limit: int) -> builtins.list[OutboxEvent]:
        """Lease up to ``limit`` due pending events, in order per attempt.

        An event is due when its ``next_try_at`` has come, its lease is free or expired, and no
        earlier event of the same attempt is still pending (delivered or dead-lettered events do
        not hold later ones back). Each candidate is taken by a guarded UPDATE, so two workers
        never hold the same event at once.
        """
        earlier = events.alias("earlier_event")
        # An attempt's events in its history's order (index ix_events_attempt_history).
        blocked = sa.exists().where(earlier.c.attempt_id == _e.attempt_id,
                                    earlier.c.history_seq < _e.history_seq, earlier.c.delivery == PENDING)
        free = sa.or_(_e.lease_expires_at.is_(None), _e.lease_expires_at <= now)
        self.position_new()  # only positioned events are sent: the position is the webhook's id
        candidates = (sa.select(_e.position).where(_e.position.is_not(None), _e.delivery == PENDING,
                                                   _e.next_try_at <= now, free, ~blocked)
                      .order_by(_e.position).limit(limit))
        with self._read() as conn:  # most passes find nothing: no write transaction for them
            due = conn.execute(candidates).scalars().all()
        taken: builtins.list[int] = []
        if not due:
            return []
        with self.db.begin() as conn:
            for seq in due:
                moved = conn.execute(events.update().where(_e.position == seq, _e.delivery == PENDING, free)
                                     .values(lease_owner=owner, lease_expires_at=lease_until))
                if moved.rowcount == 1:
                    taken.append(seq)
        return self.read(0, len(taken), seqs=taken) if taken else []

    def _settle(self, seq: int, owner: str, **values: Any) -> bool:
        with self.db.begin() as conn:
            moved = conn.execute(events.update().where(_e.position == seq, _e.lease_owner == owner,
                                                       _e.delivery == PENDING)
                                 .values(lease_owner=None, lease_expires_at=None, **values))
            return bool(moved.rowcount == 1)

    def mark_delivered(self, seq: int, owner: str, *, now: datetime, tries: int) -> bool:
        """The receiver accepted the event; False when the lease was no longer ``owner``'s."""
        return self._settle(seq, owner, delivery=DELIVERED, delivered_at=now, tries=tries, last_error=None)

    def mark_retry(self, seq: int, owner: str, *, at: datetime, tries: int, error: str) -> bool:
        """Send again at ``at``; ``tries`` sends have failed so far."""
        return self._settle(seq, owner, next_try_at=at, tries=tries, last_error=error[:300])

    def mark_dead(self, seq: int, owner: str, *, tries: int, error: str) -> bool:
        """Dead-letter the event: no further sends until ``redeliver``."""
        return self._settle(seq, owner, delivery=DEAD, next_try_at=None, tries=tries, last_error=error[:300])

    def release(self, seq: int, owner: str) -> bool:
        """Give a claimed event back unsent (no try counted): any worker may take it now."""
        return self._settle(seq, owner)

    def redeliver(self, *, now: datetime, seq: int | None = None, failed: bool = False) -> int:
        """Make event ``seq`` (any state), or with ``failed`` every dead-lettered event, pending again."""
        if (seq is None) == (not failed):
            raise ValueError("give exactly one of seq and failed=True")
        # No positioning first: a position a caller can name was handed out by a read, and a
        # dead-lettered event was claimed, so positioned, before it was sent.
        where = _e.position == seq if seq is not None else _e.delivery == DEAD
        with self.db.begin() as conn:
            moved = conn.execute(events.update().where(where).values(
                delivery=PENDING, tries=0, next_try_at=now, lease_owner=None, lease_expires_at=None,
                last_error=None))
            return int(moved.rowcount)

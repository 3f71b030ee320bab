"""The SQL of one-off data steps that a migration cannot do itself (table ``backfills``, migration 0011).

A migration has no encryption keys, so data that lives only inside sealed secrets is copied out
later, by code that has them (``engine.core.realm_backfill``). Each pending step is one row of
``backfills``, inserted by the migration that makes the step necessary and deleted when the step
is done: "is there anything to do?" is one primary-key lookup that finds nothing in the common case.

The row carries the step's progress, so an interrupted run resumes: a keyset cursor over
``(created_at, id)`` (ascending: the oldest attempts first), whether every row was visited
(``scanned``), and the ids of rows that could not be read (``skipped``), which later runs try again.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence.schema import attempts, backfills
from states.model import Flow

#: The step that copies the realmId of attempts made before migration 0010 (``engine.core.realm_backfill``).
REALM_IDS = "realm_ids"


@dataclass(frozen=True)
class Mark:
    """A pending step's progress: the last visited ``(created_at, id)``, and unreadable rows."""

    after: tuple[datetime, str] | None
    scanned: bool
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class SealedRow:
    """What the realm backfill needs of one attempt: its identity and its sealed columns."""

    id: str
    element_key: str
    flow: str
    created_at: datetime
    has_instance: bool
    secrets: bytes | None
    callback_secrets: bytes | None


_COLUMNS = (attempts.c.id, attempts.c.element_key, attempts.c.flow, attempts.c.created_at,
            attempts.c.instance_id.is_not(None).label("has_instance"), attempts.c.secrets,
            attempts.c.callback_secrets)


def _row(r: Any) -> SealedRow:
    blobs = [bytes(b) if b is not None else None for b in (r.secrets, r.callback_secrets)]
    return SealedRow(str(r.id), str(r.element_key), str(r.flow), r.created_at, bool(r.has_instance),
                     blobs[0], blobs[1])


def read_mark(db: sa.Engine, name: str) -> Mark | None:
    """The pending step ``name``, or None when there is nothing to do (one primary-key lookup)."""
    with db.connect() as conn:
        row = conn.execute(sa.select(backfills).where(backfills.c.name == name)).first()
    if row is None:
        return None
    after = (row.after_created_at, str(row.after_id)) if row.after_id is not None else None
    return Mark(after, bool(row.scanned), tuple(str(i) for i in row.skipped or ()))


def arm(db: sa.Engine, name: str) -> bool:
    """Make the step ``name`` pending from the start (an operator's explicit run); False if it was."""
    with db.begin() as conn:
        if conn.execute(sa.select(backfills.c.name).where(backfills.c.name == name)).first():
            return False
        conn.execute(backfills.insert().values(name=name, scanned=False, skipped=[]))
    return True


def save_mark(db: sa.Engine, name: str, mark: Mark) -> None:
    """Record the step's progress (after each batch, so a crash loses at most one batch of work)."""
    at, after_id = mark.after if mark.after is not None else (None, None)
    with db.begin() as conn:
        conn.execute(backfills.update().where(backfills.c.name == name).values(
            after_created_at=at, after_id=after_id, scanned=mark.scanned, skipped=list(mark.skipped)))


def finish(db: sa.Engine, name: str) -> None:
    """The step is done: delete its row, so later opens find nothing to do."""
    with db.begin() as conn:
        conn.execute(backfills.delete().where(backfills.c.name == name))


def _without_realm(not_live: Collection[str]) -> Any:
    # Live rows with no realm_id that could hold one: an instance already made (a connection), or a
    # quick start (its realm is in its configuration). Consent attempts still waiting for their
    # callback claim the realm in their own step, like any attempt made after migration 0010.
    return sa.and_(attempts.c.realm_id.is_(None), attempts.c.state.not_in(sorted(not_live)),
                   sa.or_(attempts.c.instance_id.is_not(None), attempts.c.flow == Flow.QUICK.value))


def next_batch(db: sa.Engine, after: tuple[datetime, str] | None, limit: int,
               not_live: Collection[str]) -> list[SealedRow]:
    """Up to ``limit`` rows without a realm_id after the cursor, oldest first (``_without_realm``)."""
    q = sa.select(*_COLUMNS).where(_without_realm(not_live))
    if after is not None:
        at, after_id = after
        q = q.where(sa.or_(attempts.c.created_at > at,
                           sa.and_(attempts.c.created_at == at, attempts.c.id > after_id)))
    with db.connect() as conn:
        return [_row(r) for r in conn.execute(q.order_by(attempts.c.created_at, attempts.c.id).limit(limit))]


def rows_by_id(db: sa.Engine, ids: Sequence[str], not_live: Collection[str]) -> list[SealedRow]:
    """The rows ``ids`` that still need a realm_id (skipped ones tried again), oldest first."""
    if not ids:
        return []
    q = (sa.select(*_COLUMNS).where(attempts.c.id.in_(list(ids)), _without_realm(not_live))
         .order_by(attempts.c.created_at, attempts.c.id))
    with db.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def set_realm(db: sa.Engine, attempt_id: str, realm_id: str) -> bool:
    """Record an attempt's realm if it has none yet; False when a worker set one meanwhile.

    ``version`` is not bumped on purpose (as in ``persistence.rekey``): a worker holding the row's
    lease does not lose its step because of the backfill.
    """
    with db.begin() as conn:
        done = conn.execute(attempts.update()
                            .where(attempts.c.id == attempt_id, attempts.c.realm_id.is_(None))
                            .values(realm_id=realm_id))
    return done.rowcount == 1

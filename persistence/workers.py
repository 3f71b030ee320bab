"""The ``workers`` heartbeat rows (migration 0009): who runs, since when, with which keys.

Times are the database's: a heartbeat stores the database's ``now`` and liveness is judged against
it, so workers whose clocks disagree still agree on who is alive. A row older than ``dead_after``
counts as dead (its process was killed, or lost the database); it is overwritten when the worker
comes back and may be pruned by anyone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from persistence.schema import workers

#: A worker whose heartbeat is older than this many lease periods counts as dead.
DEAD_AFTER_LEASES = 3


@dataclass(frozen=True)
class WorkerRow:
    """One heartbeat: a running engine as it last reported itself."""

    worker_id: str
    host: str
    pid: int
    role: str  # worker | serve | console
    started_at: datetime
    last_tick_at: datetime
    key_ids: tuple[str, ...]  # the first is the key it writes with
    leases: int  # leases its last tick held


def db_now(conn: sa.Connection) -> datetime:
    """The database's clock, as an aware UTC datetime."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.text("SELECT now()")).scalar_one()
    else:
        value = datetime.fromisoformat(
            conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one())
    assert isinstance(value, datetime)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def beat(db: sa.Engine, worker_id: str, *, host: str, pid: int, role: str, key_ids: tuple[str, ...],
         leases: int) -> None:
    """Upsert the row of ``worker_id``; ``last_tick_at`` (at first ``started_at`` too) is the db's now."""
    with db.begin() as conn:
        now = db_now(conn)
        values = {"host": host[:255], "pid": pid, "role": role, "last_tick_at": now,
                  "key_ids": ",".join(key_ids), "leases": leases}
        done = conn.execute(workers.update().where(workers.c.worker_id == worker_id).values(values))
        if done.rowcount == 0:
            conn.execute(workers.insert().values(worker_id=worker_id, started_at=now, **values))


def forget(db: sa.Engine, worker_id: str) -> None:
    """Remove a worker's row (a clean shutdown)."""
    with db.begin() as conn:
        conn.execute(workers.delete().where(workers.c.worker_id == worker_id))


def live_workers(db: sa.Engine, dead_after: timedelta) -> list[WorkerRow]:
    """The workers whose last heartbeat is younger than ``dead_after`` on the database's clock."""
    with db.connect() as conn:
        cutoff = db_now(conn) - dead_after
        rows = conn.execute(sa.select(workers).where(workers.c.last_tick_at >= cutoff)
                            .order_by(workers.c.started_at, workers.c.worker_id)).mappings().all()
    return [WorkerRow(**{**dict(r), "key_ids": tuple(k for k in r["key_ids"].split(",") if k)}) for r in rows]

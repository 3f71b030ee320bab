"""The atomic claim of due work, the one statement where SQLite and PostgreSQL differ (DESIGN §4)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .schema import attempts


def _due(now: datetime) -> Any:
    return sa.and_(
        attempts.c.next_run_at.is_not(None),
        attempts.c.next_run_at <= now,
        sa.or_(attempts.c.lease_expires_at.is_(None), attempts.c.lease_expires_at <= now),
    )


def claim_statement(dialect: str, *, now: datetime, owner: str, lease_until: datetime, limit: int) -> Any:
    """``UPDATE ... RETURNING`` that leases the ``limit`` earliest due attempts.

    PostgreSQL: the subquery locks its rows with ``FOR UPDATE SKIP LOCKED`` so concurrent workers
    take disjoint batches without waiting. SQLite: the single UPDATE runs under the database's one
    write lock (``BEGIN IMMEDIATE``), which makes the select-and-update atomic by itself.
    ``runs`` counts claims of the current step, so a handler can tell that it may have run before.
    """
    pick = sa.select(attempts.c.id).where(_due(now)).order_by(attempts.c.next_run_at).limit(limit)
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        attempts.update()
        .where(attempts.c.id.in_(pick.scalar_subquery()))
        .where(_due(now))  # re-checked on the locked row (PostgreSQL READ COMMITTED re-evaluation)
        .values(lease_owner=owner, lease_expires_at=lease_until, runs=attempts.c.runs + 1)
        .returning(*attempts.columns)
    )

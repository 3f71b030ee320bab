"""The atomic claim of due work, the one statement where SQLite and PostgreSQL differ (DESIGN §4)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence.schema import attempts


def _due(now: Any) -> Any:  # a datetime, or a bound parameter of one
    return sa.and_(
        attempts.c.next_run_at.is_not(None),
        attempts.c.next_run_at <= now,
        sa.or_(attempts.c.lease_expires_at.is_(None), attempts.c.lease_expires_at <= now),
    )


_PARAMETERISED: dict[str, Any] = {}


def claim_params(now: datetime, owner: str, lease_until: datetime, limit: int) -> dict[str, Any]:
    """The parameters of ``parameterised_claim``."""
    return {"c_now": now, "c_owner": owner, "c_until": lease_until, "c_limit": limit}


def parameterised_claim(dialect: str) -> Any:
    """``UPDATE ... RETURNING`` that leases the ``c_limit`` earliest due attempts, built once per dialect.

    PostgreSQL: the subquery locks its rows with ``FOR UPDATE SKIP LOCKED`` so concurrent workers
    take disjoint batches without waiting. SQLite: the single UPDATE runs under the database's one
    write lock, which makes the select-and-update atomic by itself. ``runs`` counts claims of the
    current step, so a handler can tell that it may have run before. The due condition is
    re-checked on the locked row (PostgreSQL READ COMMITTED re-evaluation).

    Reusing one statement object lets SQLAlchemy reuse its memoised cache key and compiled SQL;
    building the statement with literal values per tick cost more CPU than running it.
    """
    stmt = _PARAMETERISED.get(dialect)
    if stmt is None:
        now = sa.bindparam("c_now", type_=attempts.c.next_run_at.type)
        until = sa.bindparam("c_until", type_=attempts.c.lease_expires_at.type)
        owner = sa.bindparam("c_owner", type_=attempts.c.lease_owner.type)
        limit = sa.bindparam("c_limit", type_=sa.Integer())
        pick = sa.select(attempts.c.id).where(_due(now)).order_by(attempts.c.next_run_at).limit(limit)
        if dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        stmt = _PARAMETERISED[dialect] = (
            attempts.update()
            .where(attempts.c.id.in_(pick.scalar_subquery()))
            .where(_due(now))
            .values(lease_owner=owner, lease_expires_at=until, runs=attempts.c.runs + 1)
            .returning(*attempts.columns)
        )
    return stmt

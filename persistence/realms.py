"""Realm claims (migration 0010): which attempt holds each provider account (``states.realm``).

A claim is one row per ``(element_key, realm_id)``. Claiming is race-safe without locks held across
HTTP calls: the INSERT ... ON CONFLICT DO NOTHING lets exactly one of two concurrent claimers in
(PostgreSQL makes the second wait for the first's commit; SQLite serialises writers), and taking
over a claim is a compare-and-set UPDATE on the holder's id, so of two attempts taking over the same
stale claim, one wins. A claim is never deleted: once its holder is FAILED or DISCONNECTED it is
simply stale, and the next claimer takes it over.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from persistence.schema import attempts, realm_claims
from persistence.store import Store

#: How often a claim is tried again when its holder changed between our read and our write.
CLAIM_ROUNDS = 5


class RealmClaimContendedError(RuntimeError):
    """The claim kept changing hands while we tried to take it (the step is retried later)."""


def _insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(realm_claims)


class Realms(Store):
    """Claims of provider accounts (mixed into ``Repository``)."""

    def claim_realm(self, element_key: str, realm_id: str, attempt_id: str, *, replaces: str | None,
                    not_live: Collection[str], now: datetime) -> str | None:
        """Claim ``realm_id`` of ``element_key`` for ``attempt_id``: None when it holds it now.

        Otherwise the id of the attempt that holds it and is live (its state not in ``not_live``).
        A claim held by an attempt that is not live, or by ``replaces`` (the attempt this one
        replaces, ``--replace``), is taken over. Claiming a realm one already holds is a no-op, so a
        repeated step (a crash, a retry) passes.
        """
        key = (realm_claims.c.element_key == element_key, realm_claims.c.realm_id == realm_id)
        for _ in range(CLAIM_ROUNDS):
            with self._write() as conn:
                insert = _insert(conn.dialect.name).values(
                    element_key=element_key, realm_id=realm_id, attempt_id=attempt_id, claimed_at=now)
                if conn.execute(insert.on_conflict_do_nothing()).rowcount == 1:
                    return None
                row = conn.execute(
                    sa.select(realm_claims.c.attempt_id, attempts.c.state)
                    .select_from(realm_claims.outerjoin(attempts, attempts.c.id == realm_claims.c.attempt_id))
                    .where(*key)).first()
                if row is None:
                    continue  # deleted between the two statements (by hand): insert again
                holder, state = str(row[0]), row[1]
                if holder == attempt_id:
                    return None
                if state is not None and state not in not_live and holder != replaces:
                    return holder
                # A stale claim may hide a live connection: a --replace attempt took the claim
                # over and then failed, leaving the attempt it meant to replace connected.
                other = conn.execute(
                    sa.select(attempts.c.id)
                    .where(attempts.c.element_key == element_key, attempts.c.realm_id == realm_id,
                           attempts.c.id != attempt_id, attempts.c.id != (replaces or ""),
                           attempts.c.state.not_in(list(not_live)))
                    .limit(1)).scalar()
                if other is not None:
                    return str(other)
                taken = conn.execute(realm_claims.update()
                                     .where(*key, realm_claims.c.attempt_id == holder)
                                     .values(attempt_id=attempt_id, claimed_at=now))
                if taken.rowcount == 1:
                    return None
        raise RealmClaimContendedError(
            f"realm claim of {element_key}/{realm_id} kept changing hands; the step is tried again")

    def realm_holder(self, element_key: str, realm_id: str) -> str | None:
        """The attempt that holds the claim of ``realm_id`` (live or not), or None."""
        with self._read() as conn:
            value = conn.execute(sa.select(realm_claims.c.attempt_id)
                                 .where(realm_claims.c.element_key == element_key,
                                        realm_claims.c.realm_id == realm_id)).scalar()
        return str(value) if value is not None else None

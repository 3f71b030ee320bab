"""Realm claims (migration 0010): which attempt holds each provider account (``states.realm``).

A claim is one row per ``(element_key, realm_id)``. Claiming is race-safe without locks held across
HTTP calls: the INSERT ... ON CONFLICT DO NOTHING lets exactly one of two concurrent claimers in
(PostgreSQL makes the second wait for the first's commit; SQLite serialises writers), and taking
over a claim is a compare-and-set UPDATE on the holder's id, so of two attempts taking over the same
stale claim, one wins. A claim is never deleted: once its holder is FAILED or DISCONNECTED it is
simply stale, and the next claimer takes it over.

A quick start knows its realm at start: ``insert_claiming`` inserts the attempts and their claims in
ONE transaction, so a start refused for a held realm stores nothing, and of two starts racing for a
free realm one commits and the other's claim insert finds the row (PostgreSQL: after waiting for
the first's commit).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from persistence.customer_guard import check_customers
from persistence.schema import attempts, realm_claims
from persistence.store import Store
from states.attempt import Attempt

#: How often a claim is tried again when its holder changed between our read and our write.
CLAIM_ROUNDS = 5


class RealmClaimContendedError(RuntimeError):
    """The claim kept changing hands while we tried to take it (the step is retried later)."""


class RealmsHeldError(RuntimeError):
    """Realms of a batch of new attempts are held by live attempts; the batch was rolled back.

    ``held`` maps each refused new attempt's id to the id of the live attempt holding its realm.
    """

    def __init__(self, held: dict[str, str]) -> None:
        super().__init__(f"{len(held)} realm(s) held by live attempts")
        self.held = held


def _insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(realm_claims)


# claim_free_realms' statement: [SQLite, PostgreSQL].
_CLAIM_FREE = [_insert(d).on_conflict_do_nothing().returning(realm_claims.c.attempt_id)
               for d in ("sqlite", "postgresql")]


class Realms(Store):
    """Claims of provider accounts (mixed into ``Repository``)."""

    def _insert_values(self, attempt: Attempt) -> dict[str, Any]:
        """The row of a new attempt (``Repository`` provides it)."""
        raise NotImplementedError

    def insert_claiming(self, batch: Sequence[Attempt], *, not_live: Collection[str], now: datetime) -> bool:
        """Insert NEW attempts and claim each one's ``realm_id``, in ONE transaction.

        Like ``insert_attempts``: False, with nothing stored, when another caller took one of the
        idempotency keys. A realm whose claim is free is claimed by one multi-row INSERT; a claim
        held by an attempt that is not live, or by the attempt's ``replaces``, is taken over with
        a compare-and-set on its holder. Any other claim (or a live attempt connected to the realm
        behind a stale claim) raises ``RealmsHeldError`` naming every refused attempt, and the
        transaction, attempts included, is rolled back.
        """
        claiming = [a for a in batch if a.realm_id is not None]
        try:
            with self._write() as conn:
                check_customers(conn, batch)  # CustomersHeldError: the customer guard, race-safe
                conn.execute(attempts.insert(), [self._insert_values(a) for a in batch])
                if not claiming:
                    return True
                rows = [{"element_key": a.element_key, "realm_id": a.realm_id, "attempt_id": a.id,
                         "claimed_at": now} for a in claiming]
                # One multi-row INSERT (not executemany): its rowcount is the number of claims taken.
                claims = _insert(conn.dialect.name).values(rows).on_conflict_do_nothing()
                taken = conn.execute(claims).rowcount
                if taken != len(claiming):  # some realm was claimed before: by whom, and is it live?
                    held = self._take_over(conn, claiming, not_live, now)
                    if held:
                        raise RealmsHeldError(held)
        except sa.exc.IntegrityError:
            if all(a.idempotency_key is None for a in batch):
                raise  # not a key collision: a real fault
            return False
        return True

    def _take_over(self, conn: sa.Connection, claiming: Sequence[Attempt], not_live: Collection[str],
                   now: datetime) -> dict[str, str]:
        """Take over the stale claims of ``claiming``'s realms; {attempt id: live holder} for the rest."""
        realms = sorted({str(a.realm_id) for a in claiming})
        elements = sorted({a.element_key for a in claiming})
        holders = {(str(r[0]), str(r[1])): (str(r[2]), r[3]) for r in conn.execute(
            sa.select(realm_claims.c.element_key, realm_claims.c.realm_id, realm_claims.c.attempt_id,
                      attempts.c.state)
            .select_from(realm_claims.outerjoin(attempts, attempts.c.id == realm_claims.c.attempt_id))
            .where(realm_claims.c.element_key.in_(elements), realm_claims.c.realm_id.in_(realms)))}
        held: dict[str, str] = {}
        for a in claiming:
            key = (a.element_key, str(a.realm_id))
            holder, state = holders[key]
            if holder == a.id:
                continue  # inserted just now
            if state is not None and state not in not_live and holder != a.replaces:
                held[a.id] = holder
                continue
            # As in claim_realm: a stale claim may hide a live connection to the realm.
            other = conn.execute(
                sa.select(attempts.c.id)
                .where(attempts.c.element_key == a.element_key, attempts.c.realm_id == a.realm_id,
                       attempts.c.id != a.id, attempts.c.id != (a.replaces or ""),
                       attempts.c.state.not_in(list(not_live)))
                .limit(1)).scalar()
            if other is not None:
                held[a.id] = str(other)
                continue
            swapped = conn.execute(realm_claims.update()
                                   .where(realm_claims.c.element_key == a.element_key,
                                          realm_claims.c.realm_id == a.realm_id,
                                          realm_claims.c.attempt_id == holder)
                                   .values(attempt_id=a.id, claimed_at=now))
            if swapped.rowcount != 1:
                raise RealmClaimContendedError(f"realm claim of {key[0]}/{key[1]} changed hands meanwhile")
        return held

    def live_realm_holders(self, pairs: Collection[tuple[str, str]],
                           not_live: Collection[str]) -> dict[tuple[str, str], tuple[str, str | None]]:
        """The live attempt connected to each ``(element_key, realm_id)`` pair, if any:
        ``{pair: (attempt id, its idempotency key)}``, in ONE statement.

        Live means holding the realm's claim, or (behind a stale claim) having the realm, in a
        state not in ``not_live``.
        """
        if not pairs:
            return {}
        elements = sorted({e for e, _ in pairs})
        realms = sorted({r for _, r in pairs})
        live = attempts.c.state.not_in(list(not_live))
        claimed = (sa.select(realm_claims.c.element_key, realm_claims.c.realm_id, attempts.c.id,
                             attempts.c.idempotency_key, sa.literal(0).label("rank"))
                   .select_from(realm_claims.join(attempts, attempts.c.id == realm_claims.c.attempt_id))
                   .where(realm_claims.c.element_key.in_(elements), realm_claims.c.realm_id.in_(realms),
                          live))
        connected = (sa.select(attempts.c.element_key, attempts.c.realm_id, attempts.c.id,
                               attempts.c.idempotency_key, sa.literal(1).label("rank"))
                     .where(attempts.c.element_key.in_(elements), attempts.c.realm_id.in_(realms), live))
        out: dict[tuple[str, str], tuple[str, str | None]] = {}
        with self._read() as conn:
            # The claim's holder first: it is the attempt a replacement takes the claim from.
            for row in sorted(conn.execute(sa.union_all(claimed, connected)), key=lambda r: r[4]):
                key = (str(row[0]), str(row[1]))
                if key in pairs:
                    out.setdefault(key, (str(row[2]), row[3]))
        return out

    def claim_free_realms(self, claims: Sequence[tuple[str, str, str]], *, now: datetime) -> set[str]:
        """Claim, in ONE transaction, each ``(element_key, realm_id, attempt_id)`` whose realm has no
        claim row yet; the ids of the attempts that got theirs.

        A realm with a claim row (held by another attempt, stale, or this attempt's own from an
        earlier run), or named twice in ``claims``, is left to ``claim_realm``, which judges it.
        """
        rows = [{"element_key": e, "realm_id": r, "attempt_id": a, "claimed_at": now} for e, r, a in claims]
        with self._write() as conn:
            # One statement built once per dialect, run with a list of parameters: SQLAlchemy's
            # "insertmanyvalues" sends it as multi-row INSERTs and gathers RETURNING, and its compiled
            # form is cached (a .values(rows) statement was compiled anew each tick, for every row).
            insert = _CLAIM_FREE[conn.dialect.name == "postgresql"]
            return {str(row[0]) for row in conn.execute(insert, rows)}

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

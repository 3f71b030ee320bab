"""The duplicate-connection guard inside the insert's transaction (``engine.core.guard``).

``engine.core.guard`` reads before the insert, so two starts racing for the same customer and
element could both pass its check. The insert closes that race: in the same write transaction as
the INSERT, before it, the guard looks again for a live attempt of each ``(element, customer)``
and refuses the whole batch if one is there. Writers are serialised for that look:

- SQLite: every write transaction is ``BEGIN IMMEDIATE`` (``persistence.database``), so the look
  and the insert run while no other writer can commit;
- PostgreSQL: a transaction-level advisory lock per ``(schema, element, customer)``, taken in a
  sorted order (no deadlock between two batches), makes the second starter wait for the first's
  COMMIT; its look (READ COMMITTED: a fresh snapshot per statement) then sees the first's row.

No constraint is used because ``replace`` means two live attempts for a while (the new one
records the one it replaces); an attempt's own ``replaces`` and a live attempt with the same
idempotency key (the same start, repeated) are not duplicates.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from persistence.schema import attempts
from states.attempt import Attempt
from states.realm import NOT_LIVE_VALUES  # live: as for engine.core.guard's read

_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.customers'), "
                "hashtext(:element || '/' || :customer))")


class CustomersHeldError(RuntimeError):
    """Customers of a batch of new attempts have a live attempt; the batch was rolled back.

    ``held`` maps each refused new attempt's id to ``(live attempt id, its state)``.
    """

    def __init__(self, held: dict[str, tuple[str, str]]) -> None:
        super().__init__(f"{len(held)} customer(s) already have a live attempt")
        self.held = held


def check_customers(conn: sa.Connection, batch: Sequence[Attempt]) -> None:
    """Raise ``CustomersHeldError`` if a customer of ``batch`` has a live attempt for its element.

    Call inside the write transaction that inserts ``batch``, before the INSERT.
    """
    guarded = [a for a in batch if a.customer is not None]
    if not guarded:
        return
    pairs = sorted({(a.element_key, str(a.customer)) for a in guarded})
    if conn.dialect.name == "postgresql":
        for element, customer in pairs:
            conn.execute(_LOCK, {"element": element, "customer": customer})
    mine = [a.id for a in batch]
    rows = conn.execute(
        sa.select(attempts.c.id, attempts.c.element_key, attempts.c.customer, attempts.c.state,
                  attempts.c.idempotency_key)
        .where(sa.or_(*(sa.and_(attempts.c.element_key == e, attempts.c.customer == c) for e, c in pairs)),
               attempts.c.state.not_in(NOT_LIVE_VALUES), attempts.c.id.not_in(mine))
        .order_by(attempts.c.created_at.desc())).all()
    held: dict[str, tuple[str, str]] = {}
    for a in guarded:
        for row in rows:
            if (row.element_key, row.customer) != (a.element_key, a.customer) or row.id == a.replaces:
                continue
            if a.idempotency_key is not None and row.idempotency_key == a.idempotency_key:
                continue  # the same start, stored by a concurrent caller: the key lookup returns it
            held[a.id] = (str(row.id), str(row.state))
            break
    if held:
        raise CustomersHeldError(held)

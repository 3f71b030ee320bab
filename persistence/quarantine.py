"""Quarantine of rows that cannot be read (issue 16 item 3): one bad row never poisons the queue.

A claimed row whose secrets no configured key opens (or that cannot be turned into an ``Attempt``)
is released at once and parked: ``next_run_at`` NULL, so no worker claims it again, and
``last_error`` of kind ``unreadable_secrets`` with the fix, so ``list``/``show``/the console show it
as needing operator action. The rest of the batch runs. The operator's action is to start a
worker with the right key: every worker start calls ``release_quarantined``, which makes each
parked row that the key now opens due again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence.codec import Codec
from persistence.schema import attempts

UNREADABLE = "unreadable_secrets"

#: The stored error of a quarantined row (``ProvisionError.to_dict()`` shape, no secret in it).
QUARANTINE_ERROR: dict[str, Any] = {
    "kind": UNREADABLE,
    "message": "stored secrets cannot be decrypted with the configured key: quarantined, needs operator "
               "action",
    "hint": "Start the worker with the PROVISION_SECRET_KEY (or key file) this row was written with "
            "(several keys, comma-separated, are allowed); the row is released when a worker starts.",
}

_IS_QUARANTINED = sa.and_(
    attempts.c.next_run_at.is_(None),
    attempts.c.last_error.is_not(None),
    # JSON text comparison works on both backends without JSON operators.
    sa.cast(attempts.c.last_error, sa.Text).like(f'%"{UNREADABLE}"%'),
)


def quarantine(conn: sa.Connection, ids: Iterable[str], owner: str, now: datetime) -> int:
    """Release the claimed rows ``ids`` (held by ``owner``) and park them; returns how many."""
    ids = list(ids)
    if not ids:
        return 0
    result = conn.execute(
        attempts.update()
        .where(attempts.c.id.in_(ids), attempts.c.lease_owner == owner)
        .values(next_run_at=None, lease_owner=None, lease_expires_at=None, last_error=QUARANTINE_ERROR,
                version=attempts.c.version + 1, updated_at=now)
    )
    return int(result.rowcount)


def quarantined_rows(conn: sa.Connection) -> list[Any]:
    """The parked rows (id, version, secrets, callback_secrets)."""
    q = sa.select(attempts.c.id, attempts.c.version, attempts.c.secrets, attempts.c.callback_secrets)
    return list(conn.execute(q.where(_IS_QUARANTINED)).mappings())


def opens(codec: Codec, row: Any) -> bool:
    """True when ``codec`` opens every sealed column of ``row`` (``secrets``, ``callback_secrets``)."""
    try:
        for blob in (row["secrets"], row["callback_secrets"]):
            if blob:
                codec.open(bytes(blob))
    except Exception:  # noqa: BLE001 - a row the codec cannot open stays parked, whatever it raised
        return False
    return True


def release(conn: sa.Connection, rows: Iterable[Any], opens: Callable[[Any], bool], now: datetime) -> int:
    """Make each parked row of ``rows`` that ``opens`` due at ``now`` again; returns how many."""
    released = 0
    for row in rows:
        if not opens(row):
            continue
        result = conn.execute(
            attempts.update()
            .where(attempts.c.id == row["id"], attempts.c.version == row["version"], _IS_QUARANTINED)
            .values(next_run_at=now, last_error=None, version=attempts.c.version + 1, updated_at=now)
        )
        released += int(result.rowcount)
    return released

"""Re-encrypting every stored secret under the codec's newest key: key rotation's SQL.

``engine.security.rotation`` owns the key protocol (which keys, the key file, when it is safe to
drop the old key); this module owns the rows. Every sealed column (``attempts.secrets``,
``attempts.callback_secrets``, ``callbacks.params``) is read in id order, batch by batch, and
re-sealed through the injected ``RekeyCodec``: one transaction per batch, each row with a
compare-and-set ``UPDATE ... WHERE id=? AND <blob>=<the blob we read>``, so a worker that rewrote
the row meanwhile wins and the row is read again. ``version`` is not bumped on purpose: a worker
holding a lease does not lose its step because of a rotation. Rows already under the newest key
are skipped, so an interrupted run is simply run again. Afterwards ``release_quarantined`` makes due
again the rows a worker parked because it could not open them (``persistence.quarantine``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa

from persistence.codec import Codec, RekeyCodec
from persistence.quarantine import opens, quarantined_rows, release
from persistence.schema import attempts, callbacks
from persistence.workers import db_now

log = logging.getLogger(__name__)


class RowsKeptChangingError(RuntimeError):
    """Rows of ``table`` were rewritten by workers on every try; running the rotation again helps."""

    def __init__(self, table: str, count: int) -> None:
        super().__init__(f"{count} {table} rows kept changing during the rotation")
        self.table = table
        self.count = count


@dataclass
class RekeyTally:
    """What a re-encryption did."""

    attempts: int = 0  # attempts blobs (secrets, callback_secrets) re-encrypted by this run
    callbacks: int = 0  # callbacks.params rows re-encrypted by this run
    already_current: int = 0  # rows found under the new key already (an earlier, interrupted run)
    unreadable: int = 0  # rows no configured key opens: left untouched
    retried: int = 0  # rows a concurrent writer changed under us, read again


class Rekeyer:
    """Re-encrypts one column of one table in id order, batch by batch."""

    def __init__(self, db: sa.Engine, codec: RekeyCodec, tally: RekeyTally, batch: int) -> None:
        self.db, self.codec, self.tally, self.batch = db, codec, tally, batch

    def run(self, table: sa.Table, column: str) -> int:
        """Re-encrypt ``table.column``; returns the rows rewritten (``RowsKeptChangingError``)."""
        col, key = table.c[column], table.c[list(table.primary_key.columns)[0].name]
        done, after = 0, None
        while True:
            q = sa.select(key, col).where(col.is_not(None)).order_by(key).limit(self.batch)
            if after is not None:
                q = q.where(key > after)
            with self.db.connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return done
            after = rows[-1][0]
            pending = [(row_id, bytes(blob)) for row_id, blob in rows]
            for _ in range(20):  # rows a writer changed under us are read again (bounded)
                if not pending:
                    break
                rotated, pending = self._batch(table, key, col, pending)
                done += rotated
            if pending:
                raise RowsKeptChangingError(table.name, len(pending))

    def _batch(self, table: sa.Table, key: Any, col: Any,
               rows: list[tuple[Any, bytes]]) -> tuple[int, list[tuple[Any, bytes]]]:
        """One transaction: (rows rotated, rows whose compare-and-set lost, with their current blob)."""
        lost: list[Any] = []
        rotated = 0
        with self.db.begin() as conn:
            for row_id, blob in rows:
                if self.codec.is_current(blob):
                    self.tally.already_current += 1
                    continue
                fresh = self.codec.rotate(blob)
                if fresh is None:
                    self.tally.unreadable += 1
                    log.error("%s row %s: no configured key decrypts it; left untouched", table.name, row_id)
                    continue
                result = conn.execute(
                    sa.update(table).where(key == row_id, col == blob).values({col.name: fresh})
                )
                if result.rowcount == 1:
                    rotated += 1
                else:
                    lost.append(row_id)
        if not lost:
            return rotated, []
        self.tally.retried += len(lost)
        with self.db.connect() as conn:
            again = conn.execute(sa.select(key, col).where(key.in_(lost), col.is_not(None))).all()
        return rotated, [(row_id, bytes(blob)) for row_id, blob in again]


def reencrypt(db: sa.Engine, codec: RekeyCodec, *, batch: int) -> RekeyTally:
    """Re-seal every stored secret under ``codec``'s newest key; what it did, counted."""
    tally = RekeyTally()
    rekeyer = Rekeyer(db, codec, tally, batch)
    tally.attempts = rekeyer.run(attempts, "secrets") + rekeyer.run(attempts, "callback_secrets")
    tally.callbacks = rekeyer.run(callbacks, "params")
    return tally


def release_quarantined(db: sa.Engine, codec: Codec) -> int:
    """Make due again (on the database's clock) every quarantined row that ``codec`` opens; how many.

    A rotation holds NEW,OLD and so opens every row either key sealed. During a rolling restart a
    worker still holding OLD alone quarantines rows sealed under NEW; a worker releases such rows
    only at its start, and the successors may all have started before the last quarantine. Issue 16
    item 2: rotation leaves no row behind.
    """
    with db.connect() as conn:
        rows = quarantined_rows(conn)
    if not rows:
        return 0
    with db.begin() as conn:
        return release(conn, rows, partial(opens, codec), db_now(conn))


def sealed_sample(db: sa.Engine, limit: int = 5) -> list[bytes]:
    """Up to ``limit`` stored secret blobs (by primary key, one index range): a cheap key check.

    Opening an engine trial-decrypts these: when the configured key opens none of them, it is the
    wrong key for this database and the start is refused before anything is written with it.
    """
    q = sa.select(attempts.c.secrets).where(attempts.c.secrets.is_not(None)).order_by(attempts.c.id)
    with db.connect() as conn:
        return [bytes(blob) for (blob,) in conn.execute(q.limit(limit))]

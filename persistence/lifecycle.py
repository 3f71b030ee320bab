"""Writes of the connection lifecycle that are not transitions (issue 10/12 must-haves 5, 6).

A health check's result and a connect link's token hash are bookkeeping on the attempt row: they
move no state, so they bump no version and cannot make a worker's guarded step write fail.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from persistence.schema import attempts
from persistence.store import Store

_NEW, _OLD = attempts.alias("new"), attempts.alias("old")
# Run by every tick: built once and prepared once per database (``Store.prepared``), so a tick
# pays one indexed read and no statement compilation (bench: it cost 5 ms a tick when built each time).
REPLACED_TO_RETIRE = (
    sa.select(_OLD.c.id, _OLD.c.state).select_from(_NEW.join(_OLD, _OLD.c.id == _NEW.c.replaces))
    # ``state || ''`` keeps SQLite off the state index: with no statistics it preferred that index
    # and read every PROVISIONED row on every tick (6 ms a tick at 10,000 connections, growing with
    # the table) instead of the partial index of replacing rows, which is empty without --replace.
    .where(_NEW.c.replaces.is_not(None), _NEW.c.state.concat("") == "PROVISIONED",
           _OLD.c.state != "DISCONNECTING", _OLD.c.state != "DISCONNECTED"))


class Lifecycle(Store):
    """Health results and connect-link tokens on ``attempts`` (mixed into ``Repository``)."""

    def record_health(self, attempt_id: str, *, health: str, reason: str | None, at: datetime) -> bool:
        """Store a health check's result; False if the attempt does not exist."""
        with self._write_one() as conn:
            result = conn.execute(attempts.update().where(attempts.c.id == attempt_id)
                                  .values(health=health, health_reason=reason, last_check_at=at))
        return bool(result.rowcount == 1)

    def set_connect_token(self, attempt_id: str, token_hash: str, *, state: str) -> bool:
        """Store the hash of a new connect link's token (replacing any earlier link) while the
        attempt is in ``state``; False if it is not (it moved on meanwhile)."""
        with self._write_one() as conn:
            result = conn.execute(attempts.update()
                                  .where(attempts.c.id == attempt_id, attempts.c.state == state)
                                  .values(connect_token_hash=token_hash))
        return bool(result.rowcount == 1)

    def replaced_to_retire(self) -> list[tuple[str, str]]:
        """``(id, state)`` of attempts replaced by a PROVISIONED attempt and not yet disconnecting.

        A range of the partial index ``ix_attempts_replaces`` (only replacing rows), so the tick
        that runs it pays almost nothing when nobody uses ``--replace``.
        """
        with self._read() as conn:
            return [(str(i), str(s)) for i, s in self.prepared(REPLACED_TO_RETIRE).execute(conn, {})]

    def take_connect_token(self, token_hash: str) -> str | None:
        """Spend the connect link with ``token_hash``: the attempt's id, exactly once.

        A compare-and-set on the hash: of two concurrent clicks, one clears it and wins.
        """
        with self._read() as conn:
            attempt_id = conn.execute(sa.select(attempts.c.id)
                                      .where(attempts.c.connect_token_hash == token_hash)).scalar()
        if attempt_id is None:
            return None
        with self._write_one() as conn:
            result = conn.execute(attempts.update()
                                  .where(attempts.c.id == attempt_id,
                                         attempts.c.connect_token_hash == token_hash)
                                  .values(connect_token_hash=None))
        return str(attempt_id) if result.rowcount == 1 else None

"""The callbacks inbox: every provider callback is recorded with its outcome (DESIGN §6).

Also the one-statement application of a complete callback (``Inbox.apply_callback``).
"""
from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from persistence.statements import (
    CALLBACKS_BY,
    INSERT_CALLBACK,
    INSERT_CALLBACK_HISTORY,
    INSERT_CALLBACK_INBOX,
    PENDING_FOR,
    UPDATE_CALLBACK,
    apply_callback_update,
)
from persistence.store import Store
from persistence.writes import NewCallback
from states.attempt import HistoryEntry
from states.model import Flow

# The history columns an applied callback takes from its HistoryEntry (attempt_id and seq come
# from the moved row).
_HISTORY_VALUES = ("trigger", "source", "dest", "at", "duration_ms", "worker", "outcome", "tries", "error",
                   "note")


@dataclass(frozen=True)
class CallbackRecord:
    """A callbacks-inbox row; ``params`` stays sealed until the engine needs it."""

    id: int
    attempt_id: str | None
    received_at: datetime
    status: str
    reason: str | None
    digest: str | None
    params: bytes | None = None


class Inbox(Store):
    """Reads and writes of the ``callbacks`` table (a part of ``Repository``)."""

    def callbacks(self, attempt_id: str | None = None,
                  status: str | None = None) -> builtins.list[CallbackRecord]:
        """Inbox rows, oldest first, optionally for one attempt and/or one status."""
        q = CALLBACKS_BY[(attempt_id is not None, status is not None)]
        with self._read() as conn:
            rows = conn.execute(q, {"g_attempt": attempt_id, "g_status": status}).mappings()
            return [CallbackRecord(**dict(r)) for r in rows]

    def pending_callbacks(self, attempt_id: str) -> builtins.list[tuple[int, dict[str, str]]]:
        """The ``(id, params)`` of the attempt's inbox rows still ``pending``, params opened."""
        return [(row.id, self.codec.open(row.params) if row.params else {})
                for row in self.callbacks(attempt_id, status="pending")]

    def attempts_with_pending_callbacks(self, attempt_ids: Sequence[str]) -> set[str]:
        """Those of ``attempt_ids`` that have inbox rows still ``pending``."""
        with self._read() as conn:
            return {r[0] for r in conn.execute(PENDING_FOR, {"g_ids": list(attempt_ids)})}

    def apply_callback(self, attempt_id: str, *, flow: Flow, nonce_hash: str, token_hash: str | None,
                       now: datetime, entry: HistoryEntry, callback: NewCallback) -> bool:
        """Apply a callback to a REDIRECTED attempt without reading it first; False if the guard fails.

        The guard is ``statements.apply_callback_update``'s (state, nonce, deadline, flow, token);
        ``entry`` is the history row (its ``seq`` is taken from the row) and ``callback`` the
        inbox row, whose parameters also go to ``callback_secrets``. On False nothing is written
        and the caller reads the attempt to tell why (``engine.core.callbacks``).
        """
        sealed = self.codec.seal(callback.params) if callback.params is not None else None
        # The same ciphertext serves both columns: one encryption instead of two.
        values: dict[str, Any] = {"g_id": attempt_id, "g_nonce": nonce_hash, "g_flow": flow.value,
                                  "g_now": now, "v_callback_secrets": sealed, "v_last_error": None}
        if flow is Flow.OAUTH1:
            values["g_token"] = token_hash
        for name in _HISTORY_VALUES:
            values["h_" + name] = getattr(entry, name)
        values.update(cb_received_at=callback.received_at, cb_digest=callback.digest,
                      cb_status=callback.status, cb_reason=callback.reason)
        # Prepared once per database (persistence.prepared): this runs once per provider callback,
        # and building the parameters through Connection.execute cost as much CPU as the round trip.
        guard = self.prepared(apply_callback_update(oauth1=flow is Flow.OAUTH1, pg=self._pg))
        if self._pg:
            with self._write_one() as conn:
                return len(guard.execute(conn, values)) == 1
        values.update(cb_attempt_id=attempt_id, cb_params=sealed)
        with self._write() as conn:
            moved = guard.execute(conn, values)
            if not moved:
                return False
            values.update(h_attempt_id=moved[0][0], h_seq=moved[0][1])
            self.prepared(INSERT_CALLBACK_HISTORY).execute(conn, values)
            self.prepared(INSERT_CALLBACK_INBOX).execute(conn, values)
        return True

    def _callback_values(self, cb: NewCallback) -> dict[str, Any]:
        return {
            "attempt_id": cb.attempt_id,
            "received_at": cb.received_at,
            "params": self.codec.seal(cb.params) if cb.params is not None else None,
            "digest": cb.digest,
            "status": cb.status,
            "reason": cb.reason,
        }

    def record_callback(self, cb: NewCallback) -> int:
        """Insert an inbox row on its own (rejected, duplicate or pending callbacks)."""
        with self._write_one() as conn:
            result = conn.execute(INSERT_CALLBACK, self._callback_values(cb))
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def update_callback(self, callback_id: int, status: str, reason: str | None) -> None:
        """Settle a pending inbox row."""
        with self._write_one() as conn:
            conn.execute(UPDATE_CALLBACK, {"g_cb_id": callback_id, "v_status": status, "v_reason": reason})

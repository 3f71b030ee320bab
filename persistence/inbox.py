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
    INSERT_HISTORY,
    PENDING_FOR,
    UPDATE_CALLBACK,
    apply_callback_update,
)
from persistence.store import Store
from persistence.writes import NewCallback
from states.attempt import HistoryEntry
from states.model import Flow


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
        inbox_row = self._callback_values(callback)
        # The same ciphertext serves both columns: one encryption instead of two.
        params: dict[str, Any] = {"g_id": attempt_id, "g_nonce": nonce_hash, "g_flow": flow.value,
                                  "g_now": now, "v_callback_secrets": inbox_row["params"]}
        if flow is Flow.OAUTH1:
            params["g_token"] = token_hash
        stmt = apply_callback_update(oauth1=flow is Flow.OAUTH1, pg=self._pg)
        history_row = {k: v for k, v in entry.__dict__.items() if k not in ("attempt_id", "seq")}
        if self._pg:
            params.update({"h_" + k: v for k, v in history_row.items()})
            params.update({"cb_" + k: v for k, v in inbox_row.items()})
            with self._write_one() as conn:
                return len(conn.execute(stmt, params).all()) == 1
        with self._write() as conn:
            moved = conn.execute(stmt, params).first()
            if moved is None:
                return False
            conn.execute(INSERT_HISTORY, {**history_row, "attempt_id": moved.id, "seq": moved.history_seq})
            conn.execute(INSERT_CALLBACK, inbox_row)
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

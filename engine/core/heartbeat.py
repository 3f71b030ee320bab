"""The worker heartbeat and key-ring reload (issue 16 item 2, issue 18 item 6).

A running engine calls ``Heartbeat.after_tick`` once per pass of its loop; at most every
``every_s`` seconds (a monotonic clock, so the per-step path never pays for it) it reloads its key
ring (``engine.security.crypto.KeyRing``: a rotation published NEW,OLD in the key file) and
upserts its ``workers`` row with the key ids it now holds. The rotation (``engine.security.rotation``)
reads those rows: it re-encrypts only once every live worker writes with the new key.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from engine.core.outage import log_failure
from persistence.workers import beat, forget

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0


class ReloadableKeys(Protocol):
    """What the heartbeat needs of the key ring: reload it, and name the keys it holds."""

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys held, the one that encrypts first."""
        ...

    def reload(self) -> bool:
        """Reload from the key file if it changed; True when the keys changed."""
        ...


class Heartbeat:
    """Reloads the keys and writes this engine's ``workers`` row, at most every ``every_s`` seconds."""

    def __init__(self, db: sa.Engine, keys: ReloadableKeys, *, role: str = "worker",
                 every_s: float = HEARTBEAT_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db, self.keys, self.role, self.every_s = db, keys, role, every_s
        self._monotonic = monotonic
        self._last: float | None = None
        self.failures = 0  # failed beats in a row

    def after_tick(self, worker_id: str, leases: int) -> bool:
        """Reload the keys and beat if due; True when a heartbeat was written. Never raises: a
        database error here is logged and retried at the next tick (the worker keeps running)."""
        now = self._monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        try:
            self.keys.reload()
            beat(self.db, worker_id, host=socket.gethostname(), pid=os.getpid(), role=self.role,
                 key_ids=self.keys.key_ids, leases=leases)
        except Exception as exc:  # noqa: BLE001 - the heartbeat must never stop the worker (STYLE 11)
            self.failures += 1
            log_failure(log, "heartbeat", exc, failures=self.failures, retry_s=self.every_s)
            return False
        self.failures = 0
        return True

    def stop(self, worker_id: str) -> None:
        """Remove this engine's row on a clean shutdown (best effort)."""
        try:
            forget(self.db, worker_id)
        except Exception:  # noqa: BLE001 - a dead row simply ages out
            log.warning("could not remove the heartbeat row of %s", worker_id)

    def beside(self, worker_id: str) -> Callable[[], None]:
        """Beat from a daemon thread (``serve``/``console``: no worker loop); returns the stopper,
        which also removes the row."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.after_tick(worker_id, 0)
                stop.wait(self.every_s)

        thread = threading.Thread(target=loop, name="provision-heartbeat", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=self.every_s)
            self.stop(worker_id)

        return halt

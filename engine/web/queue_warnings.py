"""Waitress's saturation warning, once per interval with a count, instead of once per request.

When every thread of ``provision serve`` is busy, waitress logs ``Task queue depth is N`` at WARNING
for each request it queues. Under a burst that is one line per callback: one receiver on a 2-core
machine logged 1,294 of them for 2,000 callbacks, burying every other line. The
signal matters (requests wait; more threads or more processes would help), the repetition does
not. :class:`QueueWarnings` lets the first one through with that advice, holds the rest for
``interval_s`` and then lets one through again with how many it held and the deepest queue among
them; :meth:`QueueWarnings.flush` logs what is still held when the server stops.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: waitress's logger for the warning (``waitress.utilities.queue_logger``).
QUEUE_LOGGER = "waitress.queue"
#: At most one queue warning per this many seconds.
QUEUE_WARNING_INTERVAL_S = 10.0
_ADVICE = ("Task queue depth is %d: every thread is busy (PROVISION_SERVE_THREADS=%d) and requests "
           "wait; raise it, or run more `provision serve` processes")


class QueueWarnings(logging.Filter):
    """A filter for waitress's queue logger: the first warning of each ``interval_s``, with a count.

    Records other than the queue warning pass unchanged. ``clock`` gives seconds (monotonic).
    """

    def __init__(self, threads: int, *, interval_s: float = QUEUE_WARNING_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.threads = threads
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the last warning went through
        self._held = 0
        self._deepest = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the warning through (rewritten with the advice and the count held) or hold it."""
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], int)):
            return True
        depth = args[0]
        with self._lock:
            now = self._clock()
            if self._since is not None and now - self._since < self.interval_s:
                self._held += 1
                self._deepest = max(self._deepest, depth)
                return False
            held, deepest = self._held, max(self._deepest, depth)
            self._since, self._held, self._deepest = now, 0, 0
        record.msg, record.args = _ADVICE, (depth, self.threads)
        if held:
            record.msg += "; %d more such warnings in the last %.0f s, deepest queue %d"
            record.args += (held, self.interval_s, deepest)
        return True

    def flush(self, logger: logging.Logger) -> None:
        """Log, on ``logger``, the warnings still held (at shutdown, so that a burst's tail is told)."""
        with self._lock:
            held, deepest, self._held, self._deepest = self._held, self._deepest, 0, 0
        if held:
            logger.warning("%d more task queue warnings held back, deepest queue %d "
                           "(PROVISION_SERVE_THREADS=%d, all busy)", held, deepest, self.threads)

"""Waitress's saturation warning, once per interval with a count, instead of once per request.

When every thread of ``provision serve`` is busy, waitress logs ``Task queue depth is N`` at WARNING
for each request it queues. Under a burst that is one line per callback: one receiver on a 2-core
machine logged 1,294 of them for 2,000 callbacks, burying every other line. The signal matters
(requests wait; more processes would help), the repetition does not.

:class:`QueueWarnings` stands in for waitress's queue logger on one server's task dispatcher
(``engine.web.wsgi_server``), so that two servers in one process keep their own counts. It lets the
first warning through with that advice, holds the rest for ``interval_s`` and then lets one through
again with how many it held and the deepest queue among them; :meth:`QueueWarnings.flush` logs what
is still held when the server stops.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: waitress's logger for the warning (``waitress.utilities.queue_logger``); ours log there too.
QUEUE_LOGGER = "waitress.queue"
#: What waitress's ``add_task`` logs, with the depth as its one argument.
WAITRESS_MESSAGE = "Task queue depth is %d"
#: At most one queue warning per this many seconds.
QUEUE_WARNING_INTERVAL_S = 10.0
# More processes, not more threads: one process uses about one core, and at saturation the thread
# count cut both ways (bench/README.md, "serve_idle.py"): for callbacks 1 thread beat 8, for an
# instant answer 8 beat 1 by far.
_ADVICE = ("Task queue depth is %d: every thread is busy (PROVISION_SERVE_THREADS=%d) and requests "
           "wait; run more `provision serve` processes (one process uses about one core; more threads "
           "do not add one)")


class QueueWarnings:
    """One server's queue warnings: the first of each ``interval_s`` goes to ``logger``, with a count.

    Waitress calls :meth:`warning` as it would its logger's. ``clock`` gives seconds (monotonic);
    ``logger`` defaults to waitress's own (``QUEUE_LOGGER``).
    """

    def __init__(self, threads: int, *, logger: logging.Logger | None = None,
                 interval_s: float = QUEUE_WARNING_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threads = threads
        self.interval_s = interval_s
        self._log = logger or logging.getLogger(QUEUE_LOGGER)
        self._clock = clock
        self._changed = threading.Condition()
        self._since: float | None = None  # when the last warning went through
        self._held = 0
        self._deepest = 0
        self.queued = 0  # every queue warning waitress gave, let through or held

    def warning(self, msg: str, *args: object) -> None:
        """Waitress's ``warning(msg, *args)``: the queue warning is let through or held, others pass."""
        depth = args[0] if msg == WAITRESS_MESSAGE and len(args) == 1 and isinstance(args[0], int) else None
        if depth is None:
            self._log.warning(msg, *args)
            return
        with self._changed:
            self.queued += 1
            self._changed.notify_all()
            now = self._clock()
            if self._since is not None and now - self._since < self.interval_s:
                self._held += 1
                self._deepest = max(self._deepest, depth)
                return
            held, deepest = self._held, max(self._deepest, depth)
            self._since, self._held, self._deepest = now, 0, 0
        if held:
            self._log.warning(_ADVICE + "; %d more such warnings in the last %.0f s, deepest queue %d",
                              depth, self.threads, held, self.interval_s, deepest)
        else:
            self._log.warning(_ADVICE, depth, self.threads)

    def wait_for_queued(self, count: int, timeout_s: float) -> bool:
        """Wait until waitress has given ``count`` queue warnings in all; False after ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.queued >= count, timeout=timeout_s)

    def flush(self) -> None:
        """Log the warnings still held (at shutdown, so that a burst's tail is told)."""
        with self._changed:
            held, deepest, self._held, self._deepest = self._held, self._deepest, 0, 0
        if held:
            self._log.warning("%d more task queue warnings held back, deepest queue %d "
                              "(PROVISION_SERVE_THREADS=%d, all busy)", held, deepest, self.threads)

"""The gauges ``engine.web.metrics`` reads when scraped: one cheap query each.

- ``provision_queue_depth{state}``: attempts per state (``Engine.counts``).
- ``provision_due_backlog{state}``: attempts due now and not leased; ``provision_due_backlog_age_seconds``:
  seconds since the oldest of them was due (0 when none is), both from one query on the database's
  clock (``persistence.gauges.due_backlog``).
- ``provision_live_workers{role}``: heartbeat rows within the liveness window of ``provision
  workers`` (``DEAD_AFTER_LEASES`` lease periods), per role; ``worker`` is always reported, 0 included,
  so "no live worker" is a value to alert on rather than a missing series.

A gauge whose query fails is left out of that scrape (and logged), so a database outage shows up
as missing series and a failing ``/readyz``, not as a failed scrape of every other metric.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from persistence.gauges import DueBacklog, due_backlog, live_worker_counts
from persistence.workers import DEAD_AFTER_LEASES

if TYPE_CHECKING:
    from engine.core.facade import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")


def _read(what: str, query: Callable[[], T]) -> T | None:
    try:
        return query()
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail because one query did
        log.warning("metrics: reading %s failed (%s); left out of this scrape", what, type(exc).__name__)
        return None


class Gauges:
    """A Prometheus custom collector: the scrape-time gauges (``collect`` runs at each scrape)."""

    def __init__(self, counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.counts = counts
        self.backlog: Callable[[], list[DueBacklog]] | None = None
        self.live_workers: Callable[[], dict[str, int]] | None = None

    def watch(self, engine: Engine) -> None:
        """Read every gauge from ``engine``'s database."""
        db = engine.repo.engine
        dead_after = timedelta(seconds=DEAD_AFTER_LEASES * engine.settings.lease_s)
        self.counts = self.counts or engine.counts
        self.backlog = lambda: due_backlog(db)
        self.live_workers = lambda: live_worker_counts(db, dead_after)

    def collect(self) -> Iterator[Any]:
        """The gauge families, each from one query."""
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - the `metrics` extra

        if self.counts is not None and (counts := _read("queue depth", self.counts)) is not None:
            depth = GaugeMetricFamily("provision_queue_depth", "Attempts per state.", labels=["state"])
            for state, n in sorted(counts.items()):
                depth.add_metric([state], n)
            yield depth
        if self.backlog is not None and (backlog := _read("due backlog", self.backlog)) is not None:
            due = GaugeMetricFamily("provision_due_backlog", "Attempts due now and not leased, per state.",
                                    labels=["state"])
            for row in backlog:
                due.add_metric([row.state], row.count)
            yield due
            yield GaugeMetricFamily(
                "provision_due_backlog_age_seconds",
                "Seconds since the oldest due, unleased attempt was due (database clock); 0 when none.",
                value=max((row.oldest_age_s for row in backlog), default=0.0))
        if self.live_workers is not None and (live := _read("live workers", self.live_workers)) is not None:
            family = GaugeMetricFamily("provision_live_workers",
                                       "Engines whose heartbeat is within the liveness window, per role.",
                                       labels=["role"])
            for role, n in sorted({"worker": 0, **live}.items()):
                family.add_metric([role], n)
            yield family

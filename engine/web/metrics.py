"""Prometheus metrics (issue 18 must-have 6): the ``metrics`` extra, ``prometheus-client``.

``Metrics`` holds a registry of its own (one per process, passed in; no module-level collectors):

- ``provision_transitions_total{trigger,outcome}``: step results, by what triggered them and how
  they ended (advanced, failed, retry, waiting, lost, released).
- ``provision_step_duration_seconds{state}``: how long a step's handler ran, by the state it left.
- ``provision_retries_total{state}``: steps that ended in a scheduled retry.
- ``provision_callbacks_total{outcome}``: provider callbacks: applied, duplicate, pending, rejected.
- ``provision_renewal_lateness_seconds{mode}``: how late renewal steps started after their due time,
  by renewal mode (oauth2, oauth1: engine-owned; platform: a watch of a platform-owned instance).
- ``provision_webhook_deliveries_total{outcome}`` (delivered, retried, dead_lettered) and
  ``provision_webhook_delivery_duration_seconds``: webhook sends.
- Read at scrape time, one query each (``engine.web.metrics_gauges``): ``provision_queue_depth{state}``,
  ``provision_due_backlog{state}`` and ``provision_due_backlog_age_seconds``,
  ``provision_live_workers{role}``.

Labels carry only states, triggers, outcomes, modes and roles (fixed vocabularies): never a customer
name, an id or a secret. The engine calls ``Metrics`` through the ``engine.core.observe.StepObserver``
protocol (and the webhook dispatcher through ``engine.core.delivery.DeliveryObserver``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.core.runner import StepResult
from engine.errors import ProvisionError
from engine.web.metrics_gauges import Gauges
from states.attempt import Attempt
from states.exactly_once import DUPLICATE_CHECK_AT, when
from states.model import State
from states.renewal import renewal_mode

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from engine.core.facade import Engine

INSTALL_HINT = "pip install 'element-provisioner[metrics]' (or: pip install prometheus-client)"
#: Renewals are due hours apart: lateness from a second (a busy worker) to a day (no worker).
LATENESS_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, float("inf"))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def is_renewal_step(attempt: Attempt, at: datetime) -> bool:
    """Does ``attempt``'s step at ``at`` renew (or, platform-owned, watch) its tokens?

    A PROVISIONED step does, unless it pushes tokens already renewed or runs the follow-up
    duplicate check (``states.renewal.handle_provisioned``, ``states.exactly_once.duplicate_check``).
    """
    if attempt.state is not State.PROVISIONED or attempt.secrets.get("push_pending"):
        return False
    check_at = when(attempt.secrets.get(DUPLICATE_CHECK_AT))
    return check_at is None or at < check_at


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ProvisionError("metrics: prometheus-client is not installed (the 'metrics' extra)",
                             hint=INSTALL_HINT) from exc
    return prometheus_client


class Metrics:
    """The engine's Prometheus collectors on ``registry`` (a new one when not given).

    ``counts`` feeds ``provision_queue_depth``; ``watch(engine)`` feeds every scrape-time gauge from
    an engine's database (the worker's listener calls it once its engine is open).
    """

    def __init__(self, counts: Callable[[], dict[str, int]] | None = None, *,
                 registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.gauges = Gauges(counts)
        self.transitions = prom.Counter(
            "provision_transitions", "Step results by trigger and outcome.", ["trigger", "outcome"],
            registry=self.registry)
        self.durations = prom.Histogram(
            "provision_step_duration_seconds", "Step handler duration by the state it ran in.", ["state"],
            registry=self.registry)
        self.retries = prom.Counter(
            "provision_retries", "Steps that ended in a scheduled retry, by state.", ["state"],
            registry=self.registry)
        self.callbacks = prom.Counter(
            "provision_callbacks", "Provider callbacks by outcome.", ["outcome"], registry=self.registry)
        self.lateness = prom.Histogram(
            "provision_renewal_lateness_seconds", "Renewal step start minus its due time, by renewal mode.",
            ["mode"], buckets=LATENESS_BUCKETS, registry=self.registry)
        self.deliveries = prom.Counter(
            "provision_webhook_deliveries", "Webhook sends by outcome (delivered, retried, dead_lettered).",
            ["outcome"], registry=self.registry)
        self.delivery_durations = prom.Histogram(
            "provision_webhook_delivery_duration_seconds", "Duration of one webhook send.",
            registry=self.registry)
        self.registry.register(self.gauges)

    def watch(self, engine: Engine) -> Metrics:
        """Read the scrape-time gauges from ``engine``'s database; returns self."""
        self.gauges.watch(engine)
        return self

    @contextlib.contextmanager
    def running(self, attempt: Attempt, at: datetime) -> Iterator[None]:
        """Observe a renewal step's lateness as it starts (``StepObserver``): ``at`` (the engine
        clock: the database's in production) minus the time the step was due."""
        if is_renewal_step(attempt, at) and attempt.next_run_at is not None:
            late = (at - attempt.next_run_at).total_seconds()
            self.lateness.labels(renewal_mode(attempt)).observe(max(0.0, late))
        yield

    def delivery(self, outcome: str, seconds: float) -> None:
        """Count one webhook send and its duration (``DeliveryObserver``)."""
        self.deliveries.labels(outcome).inc()
        self.delivery_durations.observe(seconds)

    def step(self, result: StepResult) -> None:
        """Record one step result (the ``StepObserver`` protocol)."""
        state = result.source.value
        self.transitions.labels(result.trigger or "none", result.outcome).inc()
        if result.duration_ms is not None:
            self.durations.labels(state).observe(result.duration_ms / 1000)
        if result.outcome == "retry":
            self.retries.labels(state).inc()

    def callback(self, status: str) -> None:
        """Count one callback outcome (applied, duplicate, pending, rejected)."""
        self.callbacks.labels(status).inc()

    def exposition(self) -> bytes:
        """The text exposition format of every collector on the registry."""
        data: bytes = _prometheus().generate_latest(self.registry)
        return data


def optional_metrics(engine: Engine) -> Metrics | None:
    """``Metrics`` on ``engine`` when prometheus-client is installed, else None (no /metrics then)."""
    try:
        return Metrics().watch(engine)
    except ProvisionError:
        return None

"""Prometheus metrics (issue 18 must-have 6): the ``metrics`` extra, ``prometheus-client``.

``Metrics`` holds a registry of its own (one per process, passed in; no module-level collectors):

- ``provision_transitions_total{trigger,outcome}``: step results, by what triggered them and how
  they ended (advanced, failed, retry, waiting, lost, released).
- ``provision_step_duration_seconds{state}``: how long a step's handler ran, by the state it left.
- ``provision_retries_total{state}``: steps that ended in a scheduled retry.
- ``provision_callbacks_total{outcome}``: provider callbacks: applied, duplicate, pending, rejected.
- ``provision_queue_depth{state}``: attempts per state, read at scrape time with one query.

Labels carry only states, triggers and outcomes (fixed vocabularies): never a customer name, an id or
a secret. Engine calls ``Metrics.step`` through the ``engine.core.observe.StepObserver`` protocol.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from engine.core.runner import StepResult
from engine.errors import ProvisionError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

INSTALL_HINT = "pip install 'element-provisioner[metrics]' (or: pip install prometheus-client)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ProvisionError("metrics: prometheus-client is not installed (the 'metrics' extra)",
                             hint=INSTALL_HINT) from exc
    return prometheus_client


class _QueueDepth:
    """Attempts per state, read when scraped (one ``counts`` query per scrape)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily
        family = GaugeMetricFamily("provision_queue_depth", "Attempts per state.", labels=["state"])
        for state, n in sorted(self.counts().items()):
            family.add_metric([state], n)
        yield family


class Metrics:
    """The engine's Prometheus collectors on ``registry`` (a new one when not given)."""

    def __init__(self, counts: Callable[[], dict[str, int]], *,
                 registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
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
        self.registry.register(_QueueDepth(counts))

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


def optional_metrics(counts: Callable[[], dict[str, int]]) -> Metrics | None:
    """``Metrics`` when prometheus-client is installed, else None (the console then has no /metrics)."""
    try:
        return Metrics(counts)
    except ProvisionError:
        return None

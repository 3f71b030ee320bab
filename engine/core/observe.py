"""What the engine tells an observer about its work (issue 18 must-have 6: metrics).

The engine calls ``StepObserver.step`` with each ``StepResult`` a tick produced. The default observer
does nothing, so engine.core needs no metrics library; ``engine.web.metrics.Metrics`` is the
Prometheus observer, passed in by whoever composes the engine.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from engine.core.runner import StepResult


class StepObserver(Protocol):
    """Told of every step result, after its commit."""

    def step(self, result: StepResult) -> None:
        """Record ``result`` (must not raise: an observer cannot fail a step)."""

    def callback(self, status: str) -> None:
        """Record a callback's outcome: applied, duplicate, pending or rejected."""


class NoObserver:
    """The default: observe nothing."""

    def step(self, result: StepResult) -> None:
        """Do nothing."""

    def callback(self, status: str) -> None:
        """Do nothing."""


class Observers:
    """Several observers as one (metrics and traces together)."""

    def __init__(self, *observers: StepObserver) -> None:
        self.observers = observers

    def step(self, result: StepResult) -> None:
        """Tell each observer in turn."""
        for observer in self.observers:
            observer.step(result)

    def callback(self, status: str) -> None:
        """Tell each observer in turn."""
        for observer in self.observers:
            observer.callback(status)


class StepTracer:
    """One OpenTelemetry span per step, carrying the attempt id and state (the ``otel`` extra).

    Without ``opentelemetry-api`` it does nothing. ``provider`` is the ``TracerProvider`` to use;
    None means the API's global one (a no-op unless the application installed an SDK). The span
    covers the step's handler time; its attributes are ids, states and kinds only, never a secret.
    """

    def __init__(self, provider: Any = None, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.clock_ns = clock_ns
        try:
            from opentelemetry import trace
        except ImportError:
            self.tracer: Any = None
            return
        self.tracer = trace.get_tracer("element-provisioner", tracer_provider=provider)

    def callback(self, status: str) -> None:
        """Callbacks are spans of the receiver's HTTP request, not of this tracer."""

    def step(self, result: StepResult) -> None:
        """Record ``result`` as a span named ``provision.step``."""
        if self.tracer is None or result.steps == 0:
            return
        end = self.clock_ns()
        start = end - (result.duration_ms or 0) * 1_000_000
        attributes: dict[str, str | int] = {
            "provision.attempt_id": result.attempt_id, "provision.state": result.source.value,
            "provision.outcome": result.outcome, "provision.trigger": result.trigger or "none",
            "provision.steps": result.steps}
        if result.dest is not None:
            attributes["provision.dest"] = result.dest.value
        if result.reason:
            attributes["provision.reason"] = str(result.reason)
        span = self.tracer.start_span("provision.step", start_time=start, attributes=attributes)
        span.end(end_time=end)

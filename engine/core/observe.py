"""What the engine tells an observer about its work (issue 18 must-have 6: metrics and traces).

The engine enters ``StepObserver.running`` around each step's handler, calls ``step`` with each
``StepResult`` a tick produced (after its commit), ``callback`` with each callback's outcome and
``delivery`` with each webhook send. The default observer does nothing, so engine.core needs no
metrics or tracing library; ``engine.web.metrics.Metrics`` is the Prometheus observer and
``StepTracer`` the OpenTelemetry one, passed in by whoever composes the engine.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from engine.core.runner import StepResult
from states.attempt import Attempt

#: Step spans begun but not yet given their result; more than this means results were lost
#: (a tick that failed after its handlers ran), and the oldest are ended without one.
MAX_OPEN_SPANS = 1024


class StepObserver(Protocol):
    """Told of every step (while it runs, and its result after the commit), callback and delivery.

    No method may raise: an observer cannot fail a step.
    """

    def running(self, attempt: Attempt, at: datetime) -> AbstractContextManager[None]:
        """A block around ``attempt``'s step handler, entered at ``at`` on the engine clock."""
        ...

    def step(self, result: StepResult) -> None:
        """Record ``result``."""

    def callback(self, status: str) -> None:
        """Record a callback's outcome: applied, duplicate, pending or rejected."""

    def delivery(self, outcome: str, seconds: float) -> None:
        """Record one webhook send: delivered, retried or dead_lettered, and its duration."""


class NoObserver:
    """The default: observe nothing."""

    def running(self, attempt: Attempt, at: datetime) -> AbstractContextManager[None]:
        """Nothing around the step."""
        return contextlib.nullcontext()

    def step(self, result: StepResult) -> None:
        """Do nothing."""

    def callback(self, status: str) -> None:
        """Do nothing."""

    def delivery(self, outcome: str, seconds: float) -> None:
        """Do nothing."""


class Observers:
    """Several observers as one (metrics and traces together)."""

    def __init__(self, *observers: StepObserver) -> None:
        self.observers = observers

    @contextlib.contextmanager
    def running(self, attempt: Attempt, at: datetime) -> Iterator[None]:
        """Enter each observer's block, in order."""
        with contextlib.ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer.running(attempt, at))
            yield

    def step(self, result: StepResult) -> None:
        """Tell each observer in turn."""
        for observer in self.observers:
            observer.step(result)

    def callback(self, status: str) -> None:
        """Tell each observer in turn."""
        for observer in self.observers:
            observer.callback(status)

    def delivery(self, outcome: str, seconds: float) -> None:
        """Tell each observer in turn."""
        for observer in self.observers:
            observer.delivery(outcome, seconds)


class StepTracer:
    """One OpenTelemetry span per step, carrying the attempt id and state (the ``otel`` extra).

    Without ``opentelemetry-api`` it does nothing. ``provider`` is the ``TracerProvider`` to use;
    None means the API's global one (a no-op unless the application installed an SDK). The span
    is current while the handler runs, so the handler's HTTP calls (``engine.tracing.HttpTracer``)
    are nested under it; it is ended when the result is known (after the commit), with its end at
    start + the handler's duration. Its attributes are ids, states and kinds only, never a secret.
    """

    def __init__(self, provider: Any = None, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.clock_ns = clock_ns
        self._open: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()
        try:
            from opentelemetry import trace
        except ImportError:
            self.tracer: Any = None
            return
        self._trace = trace
        self.tracer = trace.get_tracer("element-provisioner", tracer_provider=provider)

    def callback(self, status: str) -> None:
        """Callbacks are spans of the receiver's HTTP request, not of this tracer."""

    def delivery(self, outcome: str, seconds: float) -> None:
        """A webhook send is a CLIENT span of its own (``engine.tracing``)."""

    @contextlib.contextmanager
    def running(self, attempt: Attempt, at: datetime) -> Iterator[None]:
        """Start the step's span and make it current while the handler runs."""
        if self.tracer is None:
            yield
            return
        start = self.clock_ns()
        span = self.tracer.start_span("provision.step", start_time=start, attributes={
            "provision.attempt_id": attempt.id, "provision.state": attempt.state.value})
        with self._trace.use_span(span, end_on_exit=False, record_exception=False,
                                  set_status_on_exception=False):
            try:
                yield
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.end()
                raise
        with self._lock:
            stale = self._open.pop(attempt.id, None)  # its result never came (a failed tick)
            if stale is not None:
                stale[0].end()
            self._open[attempt.id] = (span, start)
            while len(self._open) > MAX_OPEN_SPANS:
                oldest = next(iter(self._open))
                self._open.pop(oldest)[0].end()

    def step(self, result: StepResult) -> None:
        """Give the step's span its result and end it (or record one, if none was begun)."""
        if self.tracer is None:
            return
        with self._lock:
            opened = self._open.pop(result.attempt_id, None)
        if opened is None and result.steps == 0:
            return  # released unstarted: no step ran
        attributes: dict[str, str | int] = {
            "provision.attempt_id": result.attempt_id, "provision.state": result.source.value,
            "provision.outcome": result.outcome, "provision.trigger": result.trigger or "none",
            "provision.steps": result.steps}
        if result.dest is not None:
            attributes["provision.dest"] = result.dest.value
        if result.reason:
            attributes["provision.reason"] = str(result.reason)
        duration_ns = (result.duration_ms or 0) * 1_000_000
        if opened is None:
            end = self.clock_ns()
            span = self.tracer.start_span("provision.step", start_time=end - duration_ns,
                                          attributes=attributes)
        else:
            span, start = opened
            span.set_attributes(attributes)
            end = start + duration_ns
        span.end(end_time=end)

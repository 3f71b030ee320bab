"""Without the ``otel`` extra (``opentelemetry`` not importable) step and HTTP tracing do nothing."""
from __future__ import annotations

import sys

import pytest

from engine.core.observe import StepTracer
from engine.tracing import HttpTracer, current_call_context, step_context


def test_without_the_extra_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # `import opentelemetry` now fails
    tracer = HttpTracer()
    assert tracer._tracer is None  # noqa: SLF001 - the no-op is the point
    with tracer.call("create_instance", "POST") as span:
        span.status(503)  # accepted and dropped
    assert StepTracer().tracer is None


def test_the_call_context_is_scoped_to_its_block() -> None:
    assert current_call_context() is None
    with step_context("a-1", "NEW"):
        with step_context("a-2", "PROVISIONED"):
            context = current_call_context()
            assert context is not None and (context.attempt_id, context.state) == ("a-2", "PROVISIONED")
        context = current_call_context()
        assert context is not None and context.attempt_id == "a-1"
    assert current_call_context() is None

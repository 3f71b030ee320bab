"""Issue 18 must-have 6: one OpenTelemetry span per real step, with the attempt id and state, recorded
by the SDK's InMemorySpanExporter; a planted secret reaches no span attribute."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from testkit import QUICK_CONFIG

from engine import Engine, FakeClock
from engine.core.observe import Observers, StepTracer

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

SECRET = "planted-secret-9e2f"


def test_each_step_is_a_span_with_attempt_and_state(
        sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock) -> None:
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    engine = engine_on(sqlite_url, clock=clock, observer=Observers(StepTracer(provider)))
    a = engine.start("quickbooks", f"Span {SECRET}", flow="quick",
                     config={**QUICK_CONFIG, "oauth.user.token.secret": SECRET})
    results = [r for report in engine.run_until_idle() for r in report.results if r.steps]
    spans = exporter.get_finished_spans()
    assert results and len(spans) == len(results)
    for span, result in zip(spans, results, strict=True):
        assert span.name == "provision.step"
        attrs = dict(span.attributes or {})
        assert attrs["provision.attempt_id"] == a.id
        assert attrs["provision.state"] == result.source.value
        assert attrs["provision.outcome"] == result.outcome
        assert span.end_time is not None and span.start_time is not None
        assert span.end_time - span.start_time == (result.duration_ms or 0) * 1_000_000
        assert not any(SECRET in str(v) or "Span" in str(v) for v in attrs.values())


def test_without_a_provider_the_tracer_is_the_api_no_op(
        sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock) -> None:
    engine = engine_on(sqlite_url, clock=clock, observer=StepTracer())
    engine.start("quickbooks", "Quiet Co", flow="quick", config=QUICK_CONFIG)
    assert engine.run_until_idle()  # steps run; the global no-op provider records nothing

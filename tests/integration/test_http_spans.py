"""Issue 18 must-have 6: an OpenTelemetry CLIENT span per outgoing HTTP call (platform, provider,
webhooks) with the method, the endpoint NAME, the status code, and the attempt id and state, nested
under the step span; recorded by the SDK's InMemorySpanExporter over real HTTP to the sandbox and a
webhook receiver. No URL and no secret reaches a span."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from testkit import SANDBOX_COMPANY, TEST_KEY
from webhook_receiver import new_secret, receiving

from engine import ElementsClient, Engine, FakeClock, RetryPolicy
from engine.clients.webhooks import WebhookSender
from engine.config import ClientSettings, WebhookSettings
from engine.core.observe import StepTracer
from engine.tracing import HttpTracer
from engine.wiring import open_repository
from states import State

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
trace_api = pytest.importorskip("opentelemetry.trace")

REFRESH = "AB11-first-refresh-token-planted"
API_SECRET = "dev-consumer-secret"
QUICK_OAUTH2 = {"oauth.api.key": "dev-consumer-key", "oauth.api.secret": API_SECRET,
                "authentication.type": "oauth2", "oauth.user.refresh_token": REFRESH,
                "quickbooks.realm.id": "123146096291789", **SANDBOX_COMPANY}


@pytest.fixture
def traced(db_url: str, clocked_sandbox: Any, clock: FakeClock) -> Iterator[tuple[Engine, Any, Any, Any]]:
    """An engine whose steps, platform/provider calls and webhook sends all report to one exporter."""
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    secret = new_secret()
    with receiving(secret, clock=clock) as receiver:
        repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
        client = ElementsClient(ClientSettings(
            base_url=clocked_sandbox.base_url, user_secret="sandbox-user-secret",
            org_secret="sandbox-org-secret", provider_root=f"{clocked_sandbox.root_url}/_provider"),
            tracer=HttpTracer(provider))
        settings = WebhookSettings(url=receiver.url, secret=secret, connect_timeout=1, read_timeout=2)
        hooks = WebhookSender(settings, tracer=HttpTracer(provider))
        engine = Engine(repo, client, clock=clock, sleep=lambda s: None, webhooks=hooks,
                        observer=StepTracer(provider), policy=RetryPolicy(in_process_attempts=1))
        try:
            yield engine, exporter, clocked_sandbox, receiver
        finally:
            engine.close()


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_every_call_is_a_client_span_under_its_step(traced: tuple[Engine, Any, Any, Any],
                                                     clock: FakeClock) -> None:
    engine, exporter, sandbox, receiver = traced
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 503, "count": 1}})
    a = engine.start("quickbooks", "Traced Co", flow="quick", config=QUICK_OAUTH2)
    engine.run_until_idle()  # the create fails once (503), then is retried at its due time
    for _ in range(4):  # the retry, the duplicate check, a renewal (provider) and its push
        due = engine.get(a.id).next_run_at
        assert due is not None
        clock.now = max(clock(), due) + timedelta(seconds=1)
        engine.run_until_idle()
    assert engine.get(a.id).state is State.PROVISIONED and engine.get(a.id).renewals >= 1
    assert receiver.received, "no webhook was sent"

    spans = exporter.get_finished_spans()
    steps = {s.context.span_id: s for s in spans if s.name == "provision.step"}
    calls = [s for s in spans if s.kind is trace_api.SpanKind.CLIENT]
    assert steps and calls
    endpoints = {_attrs(s)["provision.endpoint"] for s in calls}
    assert {"create_instance", "provider_token", "update_instance", "webhook"} <= endpoints
    for call in calls:
        attrs = _attrs(call)
        assert call.name == f"HTTP {attrs['http.request.method']} {attrs['provision.endpoint']}"
        assert attrs["http.request.method"] in {"GET", "POST", "PATCH", "PUT", "DELETE"}
        assert isinstance(attrs["http.response.status_code"], int)
        assert attrs["provision.attempt_id"] == a.id
        if attrs["provision.endpoint"] == "webhook":
            assert attrs["http.response.status_code"] == 200  # sent after the steps: no step span around it
            continue
        assert call.parent is not None and call.parent.span_id in steps, attrs
        step = steps[call.parent.span_id]
        assert call.context.trace_id == step.context.trace_id
        assert attrs["provision.state"] == _attrs(step)["provision.state"]
        assert step.start_time <= call.start_time
    failed = [s for s in calls if _attrs(s)["http.response.status_code"] == 503]
    assert len(failed) == 1 and failed[0].status.status_code is trace_api.StatusCode.ERROR
    assert _attrs(failed[0])["provision.endpoint"] == "create_instance"
    for span in spans:  # endpoint names, never URLs (their queries may carry secrets), nor secrets
        text = " ".join([span.name, *map(str, _attrs(span).values())])
        assert "http://" not in text and "127.0.0.1" not in text and "/instances" not in text
        assert REFRESH not in text and API_SECRET not in text and "Traced Co" not in text


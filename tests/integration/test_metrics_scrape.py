"""Issue 18 must-have 6: Prometheus metrics scraped over real HTTP from a console on 127.0.0.1,
after real attempts ran against the sandbox; values are checked, not just names."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from testkit import QBO, consent, quick_config

from engine import CallbackRejectedError, Engine, FakeClock, RetryPolicy
from engine.config import ConsoleSettings
from engine.web.console import serve_console
from engine.web.metrics import Metrics

TOKEN = "t0ken-for-the-metrics-tests"
SECRET = "planted-secret-4c1d"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def console_url(request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(engine: Engine, metrics: Metrics, settings: ConsoleSettings) -> str:
        stop, ready, urls = threading.Event(), threading.Event(), []

        def on_ready(url: str) -> None:
            urls.append(url)
            ready.set()

        thread = threading.Thread(target=serve_console, args=(engine, "127.0.0.1", 0), kwargs={
            "settings": settings, "ready": on_ready, "stop": stop, "metrics": metrics}, daemon=True)
        thread.start()
        assert ready.wait(10), "the console did not start"
        stops.append((stop, thread))
        return urls[0].rstrip("/")

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)


def test_metrics_count_real_steps_and_read_the_queue(
        sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock,
        console_url: Callable[..., str]) -> None:
    registry = CollectorRegistry()
    holder: list[Engine] = []
    metrics = Metrics(lambda: holder[0].counts(), registry=registry)
    engine = engine_on(sqlite_url, clock=clock, observer=metrics)
    holder.append(engine)
    for name in ("Alpha Co", f"Beta {SECRET}"):
        engine.start("quickbooks", name, flow="quick", config={**quick_config(), "note": SECRET})
    reports = engine.run_until_idle()
    results = [r for report in reports for r in report.results]
    assert results, "the attempts took no step"
    url = console_url(engine, metrics, ConsoleSettings(token=TOKEN))

    status, body = _get(f"{url}/metrics")
    assert status == 401 and "provision_" not in body  # behind the console's login
    status, body = _get(f"{url}/metrics", TOKEN)
    assert status == 200
    samples = _samples(body)
    expected = Counter((r.trigger or "none", r.outcome) for r in results)
    for (trigger, outcome), n in expected.items():
        assert samples[("provision_transitions_total", (("outcome", outcome), ("trigger", trigger)))] == n
    assert sum(v for (name, _), v in samples.items() if name == "provision_transitions_total") == len(results)
    timed = Counter(r.source.value for r in results if r.duration_ms is not None)
    for state, n in timed.items():
        assert samples[("provision_step_duration_seconds_count", (("state", state),))] == n
    for state, n in engine.counts().items():
        assert samples[("provision_queue_depth", (("state", state),))] == n
    assert sum(v for (name, _), v in samples.items() if name == "provision_queue_depth") == 2
    assert SECRET not in body and "Alpha Co" not in body


def test_callback_outcomes_are_counted(
        make_engine: Callable[..., Engine], console_url: Callable[..., str]) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(dict, registry=registry)
    engine = make_engine(observer=metrics)
    a = engine.start("quickbooks", "Callback Co", flow="oauth2", **QBO)
    engine.run_until_idle()
    location = consent(engine.redirect_url(engine.get(a.id)) or "")
    assert engine.handle_callback(location).status == "applied"
    assert engine.handle_callback(location).status == "duplicate"
    with pytest.raises(CallbackRejectedError):
        engine.handle_callback(f"https://app.example.com/cb?code=x&state={SECRET}")
    url = console_url(engine, metrics, ConsoleSettings())
    status, body = _get(f"{url}/metrics")
    assert status == 200  # a loopback console without login serves it openly
    samples = _samples(body)
    for outcome in ("applied", "duplicate", "rejected"):
        assert samples[("provision_callbacks_total", (("outcome", outcome),))] == 1
    assert SECRET not in body


def test_a_transient_failure_counts_one_retry(
        sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock, sandbox: Any,
        console_url: Callable[..., str]) -> None:
    metrics = Metrics(dict, registry=CollectorRegistry())
    engine = engine_on(sqlite_url, clock=clock, observer=metrics,
                       policy=RetryPolicy(in_process_attempts=1, durable_initial=5, durable_max=60, budget=3))
    sandbox.set_faults(fails={"oauth_url": {"rate": 1.0, "status": 503, "count": 1}})
    engine.start("quickbooks", "Retry Co", flow="oauth1", **QBO)
    results = [r for report in engine.run_until_idle() for r in report.results]
    retried = [r for r in results if r.outcome == "retry"]
    assert len(retried) == 1
    samples = _samples(_get(f"{console_url(engine, metrics, ConsoleSettings())}/metrics")[1])
    assert samples[("provision_retries_total", (("state", retried[0].source.value),))] == 1
    assert sum(v for (name, _), v in samples.items() if name == "provision_retries_total") == 1

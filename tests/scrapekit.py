"""Scraping ``/metrics`` over real HTTP for the observability tests (issue 18 must-have 6)."""
from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a text exposition, keyed by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(url: str) -> tuple[int, str]:
    """GET ``url``: (status, body), error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> Samples:
    """The samples of ``base``/metrics (asserting a 200)."""
    status, body = get(f"{base}/metrics")
    assert status == 200, body
    return samples(body)


@contextmanager
def worker_listener(engine: Any, metrics: Any) -> Iterator[str]:
    """A real worker metrics listener for ``engine`` on 127.0.0.1 (any free port); yields its base URL."""
    from engine.web.worker_metrics import WorkerMetricsListener

    listener = WorkerMetricsListener("127.0.0.1", 0, metrics=metrics)
    try:
        yield listener.start(engine)
    finally:
        listener.stop()

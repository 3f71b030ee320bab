"""``provision worker``'s own metrics listener: ``PROVISION_WORKER_METRICS_PORT``."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.config.bounds import numbers_from_env


@dataclass(frozen=True)
class WorkerMetricsSettings:
    """``provision worker``'s own metrics listener: its port (None: no listener)."""

    port: int | None = None


def worker_metrics_settings_from_env(environ: Mapping[str, str] | None = None) -> WorkerMetricsSettings:
    """``PROVISION_WORKER_METRICS_PORT`` (1-65535; ``--metrics-port`` wins over it)."""
    return WorkerMetricsSettings(**numbers_from_env(environ, {"port": "PROVISION_WORKER_METRICS_PORT"}))

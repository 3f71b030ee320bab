"""Judging a platform instance's health (issue 10/12 must-have 5): a pure function of its answer.

``Engine.check`` (``engine.core.health``) asks GET ``/instances/{id}`` and hands the answer here;
the watcher of platform-owned renewals can call the same judge on the answers it already fetches,
so both agree on what "unhealthy" means. Cloud Elements marks an instance whose provider tokens
stopped working ``valid: false`` and one an administrator switched off ``disabled: true``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

#: Reasons, most serious first (the first that applies is reported).
INSTANCE_MISSING = "instance_missing"  # 404: deleted on the platform
INSTANCE_DISABLED = "instance_disabled"
INSTANCE_INVALID = "instance_invalid"  # the platform can no longer use the provider tokens
PROVIDER_REJECTED = "provider_rejected"  # the engine's own token check was refused


@dataclass(frozen=True)
class Verdict:
    """The outcome of one health check: ``health`` is ``healthy`` or ``unhealthy`` (with ``reason``)."""

    health: str
    reason: str | None = None

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return self.health == HEALTHY


OK = Verdict(HEALTHY)


def judge_instance(instance: Mapping[str, Any] | None) -> Verdict:
    """The verdict on GET ``/instances/{id}``'s answer; ``None`` means the platform answered 404.

    A missing ``valid`` or ``disabled`` field counts as fine: only what the platform says is wrong
    makes an instance unhealthy (the field appears in every answer the devportal documents).
    """
    if instance is None:
        return Verdict(UNHEALTHY, INSTANCE_MISSING)
    if instance.get("disabled") is True:
        return Verdict(UNHEALTHY, INSTANCE_DISABLED)
    if instance.get("valid") is False:
        return Verdict(UNHEALTHY, INSTANCE_INVALID)
    return OK


def needs_event(previous_health: str | None, verdict: Verdict, previous_reason: str | None = None) -> bool:
    """Whether this verdict is news: ``connection.unhealthy`` fires when an instance *becomes*
    unhealthy (or unhealthy for another reason), not on every check that finds it still broken."""
    if verdict.healthy:
        return False
    return previous_health != UNHEALTHY or previous_reason != verdict.reason

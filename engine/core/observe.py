"""What the engine tells an observer about its work (issue 18 must-have 6: metrics).

The engine calls ``StepObserver.step`` with each ``StepResult`` a tick produced. The default observer
does nothing, so engine.core needs no metrics library; ``engine.web.metrics.Metrics`` is the
Prometheus observer, passed in by whoever composes the engine.
"""
from __future__ import annotations

from typing import Protocol

from engine.core.runner import StepResult


class StepObserver(Protocol):
    """Told of every step result, after its commit."""

    def step(self, result: StepResult) -> None:
        """Record ``result`` (must not raise: an observer cannot fail a step)."""


class NoObserver:
    """The default: observe nothing."""

    def step(self, result: StepResult) -> None:
        """Do nothing."""

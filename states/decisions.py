"""What a state handler decides; the engine applies it (DESIGN §2, STYLE habit 1).

Handlers return these small values and never touch the database. ``changes`` names attempt
columns to set; ``secrets`` is merged into the attempt's encrypted secrets blob.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from states.model import FailureReason, Trigger


@dataclass(frozen=True)
class Advance:
    """Apply ``trigger``; set ``changes`` on the row and merge ``secrets``; run again at ``next_run_at``."""

    trigger: Trigger
    changes: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    next_run_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class RetryLater:
    """Nothing moved; try the same step again at ``at`` because of ``error`` (a structured dict).

    ``secrets`` is merged into the secrets blob: what the step learned that its next run needs
    (e.g. when an ambiguous POST went out, states/exactly_once.py).
    """

    at: datetime
    error: dict[str, Any]
    secrets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """Move to FAILED with ``reason``; ``error`` keeps the platform's words and a hint.

    ``secrets`` is merged into the secrets blob (a failed create keeps its ambiguity marker, so a
    restart looks the tag up before it POSTs again). ``changes`` names attempt columns to set, as
    in ``Advance`` (a refused duplicate keeps the realmId it was refused for).
    """

    reason: FailureReason
    error: dict[str, Any] | None = None
    secrets: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitForCallback:
    """The attempt waits for the user; wake up at ``deadline`` to expire it."""

    deadline: datetime


@dataclass(frozen=True)
class Stay:
    """No transition, but progress: set ``changes``/``secrets`` and run again at ``next_run_at``.

    Used after a renewal to push the new tokens to the instance, and for health checks.
    """

    changes: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    next_run_at: datetime | None = None


Decision = Advance | RetryLater | Fail | WaitForCallback | Stay

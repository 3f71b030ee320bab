"""The pure health judge (``states.health``) that ``Engine.check`` and the renewal watcher share."""
from __future__ import annotations

from typing import Any

import pytest

from states.health import (
    HEALTHY,
    INSTANCE_DISABLED,
    INSTANCE_INVALID,
    INSTANCE_MISSING,
    UNHEALTHY,
    Verdict,
    judge_instance,
    needs_event,
)


@pytest.mark.parametrize(("answer", "verdict"), [
    ({"id": 1, "valid": True, "disabled": False}, Verdict(HEALTHY)),
    ({"id": 1}, Verdict(HEALTHY)),  # fields absent: nothing says it is broken
    ({"id": 1, "valid": False, "disabled": False}, Verdict(UNHEALTHY, INSTANCE_INVALID)),
    ({"id": 1, "valid": True, "disabled": True}, Verdict(UNHEALTHY, INSTANCE_DISABLED)),
    # Most serious first.
    ({"id": 1, "valid": False, "disabled": True}, Verdict(UNHEALTHY, INSTANCE_DISABLED)),
    (None, Verdict(UNHEALTHY, INSTANCE_MISSING)),
])
def test_judge_instance(answer: dict[str, Any] | None, verdict: Verdict) -> None:
    assert judge_instance(answer) == verdict
    assert verdict.healthy is (verdict.health == HEALTHY)


def test_an_event_only_when_the_instance_becomes_unhealthy_or_the_reason_changes() -> None:
    sick = Verdict(UNHEALTHY, INSTANCE_INVALID)
    assert needs_event(None, sick) and needs_event(HEALTHY, sick)
    assert not needs_event(UNHEALTHY, sick, INSTANCE_INVALID)
    assert needs_event(UNHEALTHY, sick, INSTANCE_DISABLED)
    assert not needs_event(UNHEALTHY, Verdict(HEALTHY), INSTANCE_INVALID)

"""``engine.web.queue_warnings``: waitress's queue warning once per interval, with what was held."""
from __future__ import annotations

import logging

import pytest

from engine.web.queue_warnings import QueueWarnings

LOGGER = "test.queue_warnings"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def told(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def queue_warnings(threads: int, clock: Clock) -> QueueWarnings:
    return QueueWarnings(threads, logger=logging.getLogger(LOGGER), interval_s=10, clock=clock)


def test_the_first_warning_of_each_interval_goes_through_with_the_count_held(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    warnings = queue_warnings(8, clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        warnings.warning("Task queue depth is %d", 1)  # as waitress's add_task calls it
        clock.now += 9.9
        for depth in (2, 7, 3):
            warnings.warning("Task queue depth is %d", depth)
        clock.now += 0.1
        warnings.warning("Task queue depth is %d", 2)
        clock.now += 10
        warnings.warning("Task queue depth is %d", 4)
    advice = "every thread is busy (PROVISION_SERVE_THREADS=8) and requests wait; run more `provision " \
             "serve` processes (one process uses about one core; more threads do not add one)"
    assert told(caplog) == [f"Task queue depth is 1: {advice}",
                            f"Task queue depth is 2: {advice}; 3 more such warnings in the last 10 s, "
                            "deepest queue 7",
                            f"Task queue depth is 4: {advice}"]  # nothing held since the last
    assert warnings.queued == 6


def test_other_warnings_pass_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    warnings = queue_warnings(8, Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        warnings.warning("%d thread(s) still running", 3)
        warnings.warning("something else %s", "x")
    assert told(caplog) == ["3 thread(s) still running", "something else x"]
    assert warnings.queued == 0


def test_flush_tells_what_is_still_held(caplog: pytest.LogCaptureFixture) -> None:
    warnings = queue_warnings(2, Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for depth in (1, 5, 3):
            warnings.warning("Task queue depth is %d", depth)
        warnings.flush()
        warnings.flush()  # nothing held any more: silent
    assert told(caplog)[1:] == ["2 more task queue warnings held back, deepest queue 5 "
                                "(PROVISION_SERVE_THREADS=2, all busy)"]
    assert warnings.wait_for_queued(3, timeout_s=0) and not warnings.wait_for_queued(4, timeout_s=0)

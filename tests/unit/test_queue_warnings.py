"""``engine.web.queue_warnings``: waitress's queue warning once per interval, with what was held."""
from __future__ import annotations

import logging

import pytest

from engine.web.queue_warnings import QUEUE_LOGGER, QueueWarnings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queued(depth: int) -> logging.LogRecord:
    """The record waitress's ``add_task`` logs when every thread is busy."""
    return logging.LogRecord(QUEUE_LOGGER, logging.WARNING, "task.py", 113, "Task queue depth is %d",
                             (depth,), None)


def test_the_first_warning_of_each_interval_passes_with_the_count_held() -> None:
    clock = Clock()
    warnings = QueueWarnings(8, interval_s=10, clock=clock)
    first = queued(1)
    assert warnings.filter(first)
    assert first.getMessage() == ("Task queue depth is 1: every thread is busy (PROVISION_SERVE_THREADS=8) "
                                  "and requests wait; raise it, or run more `provision serve` processes")
    held = [queued(d) for d in (2, 7, 3)]
    clock.now += 9.9
    assert [warnings.filter(r) for r in held] == [False, False, False]
    clock.now += 0.1
    nxt = queued(2)
    assert warnings.filter(nxt)
    assert nxt.getMessage().endswith("; 3 more such warnings in the last 10 s, deepest queue 7")
    clock.now += 10
    again = queued(4)
    assert warnings.filter(again) and "more such" not in again.getMessage()  # nothing held since


def test_other_records_pass_unchanged() -> None:
    warnings = QueueWarnings(8, clock=Clock())
    assert warnings.filter(queued(1))
    other = logging.LogRecord(QUEUE_LOGGER, logging.WARNING, "x.py", 1, "something else %s", ("x",), None)
    assert warnings.filter(other) and other.getMessage() == "something else x"


def test_flush_tells_what_is_still_held(caplog: pytest.LogCaptureFixture) -> None:
    warnings = QueueWarnings(2, clock=Clock())
    logger = logging.getLogger(QUEUE_LOGGER)
    for depth in (1, 5, 3):
        warnings.filter(queued(depth))
    with caplog.at_level(logging.WARNING, logger=QUEUE_LOGGER):
        warnings.flush(logger)
        warnings.flush(logger)  # nothing held any more: silent
    assert [r.getMessage() for r in caplog.records] == [
        "2 more task queue warnings held back, deepest queue 5 (PROVISION_SERVE_THREADS=2, all busy)"]

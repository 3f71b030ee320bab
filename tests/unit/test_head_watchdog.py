"""The response-head watchdog (engine.clients.deadline): a call wakes its thread only when it must.

The watchdog thread looks at the watched sockets every POLL_S. A call whose deadline falls after
that look needs no wake-up (most calls: their deadlines are seconds away); a call whose deadline
falls before it must wake the thread, or its socket would be cut up to POLL_S late.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from engine.clients.deadline import POLL_S, HeaderWatchdog


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected socket pair: the first end is the call's, the second is the silent server's."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _settled(watchdog: HeaderWatchdog) -> None:
    """Start the watchdog's thread and let it reach its wait (its next look is POLL_S away)."""
    other_a, other_b = socket.socketpair()
    try:
        with watchdog.call(time.monotonic() + 60), watchdog.watching(other_a):
            time.sleep(0.05)
    finally:
        other_a.close()
        other_b.close()


def test_a_far_deadline_does_not_wake_the_thread(pair: tuple[socket.socket, socket.socket]) -> None:
    watchdog = HeaderWatchdog()
    _settled(watchdog)
    with watchdog.call(time.monotonic() + 30), watchdog.watching(pair[0]):
        assert not watchdog._wake.is_set(), "a deadline 30 s away woke the thread"
    assert watchdog.expired == 0


@pytest.mark.realtime
def test_a_deadline_before_the_next_look_wakes_the_thread_and_is_kept(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    watchdog = HeaderWatchdog()
    _settled(watchdog)
    started = time.monotonic()
    with watchdog.call(started + 0.02), watchdog.watching(pair[0]):
        data = pair[0].recv(1)  # the server never answers: only the watchdog ends this recv
    elapsed = time.monotonic() - started
    assert data == b"" and watchdog.expired == 1
    # Without the wake-up the cut would come at the thread's next look, up to POLL_S later.
    assert elapsed < 0.12 < POLL_S - 0.05, f"cut after {elapsed:.3f}s for a 0.02 s deadline"

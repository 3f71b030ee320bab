"""``engine.signals.stop_on_signals``: the one SIGINT/SIGTERM helper of the worker, ``serve`` and the feed."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine.signals import STOP_SIGNALS, WATCHER_JOIN_S, stop_on_signals

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_signal_calls_on_stop_and_the_previous_handler_comes_back(sig: signal.Signals) -> None:
    stopped = threading.Event()
    callers: list[str] = []

    def on_stop() -> None:
        callers.append(threading.current_thread().name)
        stopped.set()

    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with stop_on_signals(on_stop, doing="testing"):
        assert all(signal.getsignal(s) is not before[s] for s in STOP_SIGNALS)
        signal.raise_signal(sig)  # would end the run (SIGTERM) or raise KeyboardInterrupt without it
        assert stopped.wait(WATCHER_JOIN_S)
    assert callers == ["provision-signals"]  # not the main thread, inside the handler
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd came back too (none, under pytest)


def test_a_signal_just_before_the_block_ends_is_still_delivered() -> None:
    stops: list[str] = []
    with stop_on_signals(lambda: stops.append("stop")):
        signal.raise_signal(signal.SIGTERM)
    assert stops == ["stop"]  # leaving the block waits for the watcher to read what was written


def test_handlers_come_back_when_the_block_raises() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with pytest.raises(RuntimeError), stop_on_signals(lambda: None):
        raise RuntimeError("boom")
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
    assert not any(t.name == "provision-signals" for t in threading.enumerate())


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals(lambda: None):
            seen.append({s: signal.getsignal(s) for s in STOP_SIGNALS})

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(timeout=5)
    assert seen == [before]


#: A signal that lands while the main thread holds a lock ``on_stop`` needs. The worker's main thread
#: holds its wake event's lock at the top of every tick (``Event.clear()``), and its ``on_stop`` sets
#: that event: run inside the handler, ``on_stop`` waited for the main thread, which waited for the
#: handler, and the worker ignored SIGTERM for ever (a benchmark worker, 2026-12-01).
HELD_LOCK = textwrap.dedent("""
    import signal, threading
    from engine.signals import stop_on_signals
    lock = threading.Lock()
    stopped = threading.Event()

    def on_stop():
        with lock:
            stopped.set()

    with stop_on_signals(on_stop):
        with lock:
            signal.raise_signal(signal.SIGTERM)  # Python runs its handler here, in this thread
            sum(range(1000))
        assert stopped.wait(10), "on_stop never ran"
    print("stopped")
""")


def test_on_stop_may_take_a_lock_the_main_thread_held_when_the_signal_came() -> None:
    try:
        done = subprocess.run([sys.executable, "-c", HELD_LOCK], cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung: on_stop ran inside the signal handler, waiting for a lock its "
                    "own thread held")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"

"""``engine.signals.stop_on_signals``: the one SIGINT/SIGTERM helper of the worker and ``serve``."""
from __future__ import annotations

import signal
import threading

import pytest

from engine.signals import STOP_SIGNALS, stop_on_signals


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_signal_calls_on_stop_and_the_previous_handler_comes_back(sig: signal.Signals) -> None:
    stops: list[str] = []
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with stop_on_signals(lambda: stops.append("stop"), doing="testing"):
        assert all(signal.getsignal(s) is not before[s] for s in STOP_SIGNALS)
        signal.raise_signal(sig)  # would end the run (SIGTERM) or raise KeyboardInterrupt without it
        assert stops == ["stop"]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_handlers_come_back_when_the_block_raises() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with pytest.raises(RuntimeError), stop_on_signals(lambda: None):
        raise RuntimeError("boom")
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


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

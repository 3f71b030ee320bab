"""Stopping the benchmarks' child processes for certain, and saying which of them ignored SIGTERM.

A worker or receiver that does not stop on SIGTERM is a bug (it was one: engine/signals.py), and a
benchmark that waited for it for ever, or left it running with the run's output pipe open, would
hang the whole table (``compare.py`` waits for that pipe to close). So each is killed after
``timeout`` seconds, and named on stderr.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterable

DEFAULT_TIMEOUT_S = 30.0


def stop(processes: Iterable[subprocess.Popen[str]], timeout: float = DEFAULT_TIMEOUT_S, *,
         what: str = "process", terminate: bool = True) -> list[int]:
    """SIGTERM each process (unless not ``terminate``: it was told to end some other way), wait up to
    ``timeout`` s for each, SIGKILL the rest; returns the pids killed."""
    processes = list(processes)
    for proc in processes if terminate else ():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    killed = []
    for proc in processes:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed.append(proc.pid)
    if killed:
        how = "of SIGTERM" if terminate else "of being told to"
        print(f"BUG: {what} {killed} did not stop within {timeout:g} s {how}; killed",
              file=sys.stderr, flush=True)
    return killed

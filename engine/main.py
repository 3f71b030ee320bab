"""The ``provision`` program: the command line with the web receiver plugged in.

This is the process's composition root. ``engine.cli`` and ``engine.web`` are independent edges
(neither imports the other; ``setup.cfg`` enforces it), so the commands that need both,
``provision serve`` and ``provision console``, get their server functions from here.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.cli import main as cli_main
from engine.web.callback_app import serve
from engine.web.console import serve_console
from engine.web.worker_metrics import WorkerMetricsListener


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``provision`` console script; returns the exit code."""
    return cli_main(argv, serve=serve, console=serve_console, worker_metrics=WorkerMetricsListener)

"""The ``provision`` program: the command line with the web receiver plugged in.

This is the process's composition root. ``engine.cli`` and ``engine.web`` are independent edges
(neither imports the other; ``setup.cfg`` enforces it), so the commands that need both,
``provision serve`` and ``provision console``, get their server functions from here.

The web modules are imported by the commands that use them, not here: with werkzeug they took a
tenth of the start-up of every other command (``provision list``, ``show``, ``start``...).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.cli import main as cli_main


def _serve(*args: Any, **kwargs: Any) -> None:
    from engine.web.callback_app import serve  # noqa: PLC0415 - see the module docstring

    serve(*args, **kwargs)


def _serve_console(*args: Any, **kwargs: Any) -> None:
    from engine.web.console import serve_console  # noqa: PLC0415 - see the module docstring

    serve_console(*args, **kwargs)


def _worker_metrics(*args: Any, **kwargs: Any) -> Any:
    from engine.web.worker_metrics import WorkerMetricsListener  # noqa: PLC0415 - see the module docstring

    return WorkerMetricsListener(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``provision`` console script; returns the exit code."""
    return cli_main(argv, serve=_serve, console=_serve_console, worker_metrics=_worker_metrics)

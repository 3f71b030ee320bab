"""Progress bars for long interactive commands (bulk actions, ``check``, ``keys rotate``).

A bar is cosmetic: it is drawn on **stderr** only when stderr is a terminal, never under ``--json``
or ``--quiet``, and never when ``rich`` (the ``cli`` extra: ``pip install 'element-provisioner[cli]'``)
is not installed. In each of those cases the command runs exactly the same, without a bar and
without an error or warning: output that a script parses (stdout, ``--json``) never carries one.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

#: ``advance()`` after each unit of work.
Advance = Callable[[], None]


def wanted(*, as_json: bool, quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether a bar may be drawn: a terminal on ``stream`` (stderr), no ``--json``, no ``--quiet``."""
    stream = sys.stderr if stream is None else stream
    return not as_json and not quiet and stream.isatty()


@contextmanager
def bar(label: str, total: int | None, *, enabled: bool, stream: TextIO | None = None) -> Iterator[Advance]:
    """A bar of ``total`` steps (``None``: a spinner of unknown length) while the block runs.

    Yields ``advance``; a no-op when ``enabled`` is false or ``rich`` is missing.
    """
    if not enabled:
        yield _nothing
        return
    try:
        from rich.console import Console  # noqa: PLC0415 - optional: the `cli` extra
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn  # noqa: PLC0415
    except ImportError:  # cosmetic only: no bar, no error (module docstring)
        yield _nothing
        return
    console = Console(file=sys.stderr if stream is None else stream)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def _nothing() -> None:
    return None

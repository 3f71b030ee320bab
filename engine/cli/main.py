"""The ``provision`` command line (DESIGN §10): a thin argparse layer over ``Engine``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or input. Errors are printed as
``provision: error: <message> (hint: ...)`` without a traceback (``-v`` adds one for unexpected
errors). The parser is built in ``engine.cli.parser``, the commands live in ``engine.cli.commands``;
output formatting and secret redaction in ``engine.cli.output``; the callback receiver in
``engine.web.callback_app``; the demo in ``engine.cli.demo``.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.cli import failures
from engine.cli.commands import ServeFunction
from engine.cli.logs import configure_logging
from engine.cli.options import ArgumentsError, UsageError
from engine.cli.parser import build_parser, package_version
from engine.errors import (
    AttemptNotFoundError,
    CallbackRejectedError,
    InvalidInputError,
    InvalidTransitionError,
    ProvisionError,
)

__all__ = ["build_parser", "error", "main", "package_version"]

log = logging.getLogger("provision")
# Input errors (exit 2): the caller can fix them by changing the command.
INPUT_ERRORS = (InvalidInputError, CallbackRejectedError, AttemptNotFoundError, InvalidTransitionError)


def error(message: str) -> None:
    """Print ``provision: error: message`` on stderr."""
    failures.report(message)


def main(argv: Sequence[str] | None = None, *, serve: ServeFunction | None = None,
         console: ServeFunction | None = None, worker_metrics: Callable[..., Any] | None = None) -> int:
    """Run one ``provision`` command; returns the exit code (README "Exit codes").

    ``serve`` runs the public callback receiver; ``engine.main`` passes ``engine.web``'s, so that
    the CLI and the web layer never import each other (README "Layout"); ``console`` likewise runs
    the operator console. Under ``--json`` errors are JSON documents on stderr
    (``engine.cli.failures``).
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:  # argparse refused the line (ArgumentsError), or an option's type its value
        as_json = "--json" in (sys.argv[1:] if argv is None else argv)
        if isinstance(exc, ArgumentsError) and not as_json:
            print(exc.usage, end="", file=sys.stderr)  # as argparse itself would
        failures.report(str(exc), exc=exc, as_json=as_json)
        return 2
    args.serve = serve
    args.console = console
    args.worker_metrics = worker_metrics  # `worker --metrics-port` (engine.web.worker_metrics)
    configure_logging(args.verbose)

    def fail(message: str, exc: BaseException | None, code: int) -> int:
        failures.report(message, exc=exc, as_json=bool(args.json))
        return code

    try:
        return int(args.func(args))
    except INPUT_ERRORS as exc:
        return fail(failures.cli_message(exc), exc, 2)
    except ProvisionError as exc:
        return fail(failures.cli_message(exc), exc, 1)
    except KeyboardInterrupt as exc:
        return fail("interrupted", exc, 130)
    except Exception as exc:  # noqa: BLE001 - database/network failures: one line, traceback with -v
        if args.verbose:
            log.exception("unexpected failure")
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        return fail(f"{type(exc).__name__}: {first}".rstrip(": ") + " (run with -v for details)", exc, 1)

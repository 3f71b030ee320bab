"""Command-line front end: ``provision sandbox`` (wired by the engine's CLI) and ``python -m sandbox``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sandbox.defaults import DEFAULT_HOST, DEFAULT_ORG_SECRET, DEFAULT_PORT, DEFAULT_USER_SECRET, ENDPOINTS
from sandbox.faults import parse_delay, parse_fail

if TYPE_CHECKING:
    from sandbox.server import Sandbox

_ENDPOINT_LIST = ", ".join(ENDPOINTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox options to ``parser``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, 0 for any free port (default {DEFAULT_PORT})")
    parser.add_argument("--user-secret", default=DEFAULT_USER_SECRET,
                        help="user secret accepted in 'Authorization: User <secret>, ...'")
    parser.add_argument("--org-secret", default=DEFAULT_ORG_SECRET,
                        help="organization secret accepted in 'Authorization: ..., Organization <secret>'")
    parser.add_argument("--delay", action="append", default=[], metavar="ENDPOINT=SECONDS[:MODE]",
                        help="hold calls of ENDPOINT for SECONDS: ':after' (default) performs the effect "
                             "then holds the response; ':before' holds the request, then performs the effect "
                             "whatever the client did meanwhile "
                             f"(repeatable; endpoints: {_ENDPOINT_LIST})")
    parser.add_argument("--fail", action="append", default=[], metavar="ENDPOINT=RATE[:STATUS]",
                        help="answer STATUS (default 503) on a RATE fraction (0..1) of calls to ENDPOINT, "
                             "without performing the effect (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the --fail random choices")
    parser.add_argument("--page-size", type=int, default=200, metavar="N",
                        help="GET /instances page size when the caller gives no pageSize (default 200)")
    parser.add_argument("--auto-refresh", action="store_true",
                        help="refresh due instance tokens as the platform does, before every request")


def _check(flag: str, specs: list[str], form: str, example: str) -> str | None:
    parse = parse_delay if flag == "--delay" else parse_fail
    for spec in specs:
        try:
            parse(spec)
        except ValueError as exc:
            return (f"error: {flag} {spec!r}: {exc}.\n"
                    f"Use {flag} {form} with ENDPOINT one of {_ENDPOINT_LIST}, e.g. {flag} {example}")
    return None


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT/SIGTERM.

    Returns 0 on a clean stop, 2 on bad ``--delay``/``--fail`` values, 1 if the port cannot be bound.
    """
    problem = (_check("--delay", args.delay, "ENDPOINT=SECONDS", "create_instance=1.5")
               or _check("--fail", args.fail, "ENDPOINT=RATE[:STATUS]", "oauth_url=0.5:429"))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.page_size < 1:
        print(f"error: --page-size must be at least 1, got {args.page_size}", file=sys.stderr)
        return 2

    # Imported here: the server (werkzeug and the simulated platform) is a tenth of a second of
    # start-up that the other ``provision`` commands, which build this parser too, never use.
    from sandbox.server import serve_forever  # noqa: PLC0415

    def _ready(sandbox: Sandbox) -> None:
        print(f"sandbox listening on {sandbox.base_url}", flush=True)

    try:
        serve_forever(args.host, args.port, args.user_secret, args.org_secret, args.delay, args.fail,
                      args.seed, ready=_ready, page_size=args.page_size, auto_refresh=args.auto_refresh)
    except OSError as exc:  # typically the port is taken
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. "
              "Pick another --port (0 = any free port).", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sandbox``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Local Cloud Elements + Intuit OAuth simulator.")
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""The ``provision`` command line (DESIGN §10): a thin argparse layer over ``Engine``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or input. Errors are printed as
``provision: error: <message> (hint: ...)`` without a traceback (``-v`` adds one for unexpected
errors). Output formatting and secret redaction live in ``engine.cli.output``; the callback receiver
in ``engine.web.callback_app``; the demo in ``engine.cli.demo``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from engine.cli import failures
from engine.cli import output as fmt
from engine.cli.logs import configure_logging
from engine.cli.options import UsageError, host_name, parse_duration, port_number, whole_number
from engine.cli.worker import add_metrics_options
from engine.errors import (
    AttemptNotFoundError,
    CallbackRejectedError,
    InvalidInputError,
    InvalidTransitionError,
    ProvisionError,
)

log = logging.getLogger("provision")
PROG = "provision"
# Input errors (exit 2): the caller can fix them by changing the command.
INPUT_ERRORS = (InvalidInputError, CallbackRejectedError, AttemptNotFoundError, InvalidTransitionError)
BULK_ACTIONS = ("cancel", "restart")  # by filter: --state/--reason/... with --dry-run, then --yes
ID_HELP = "an attempt id, or a unique prefix of at least 4 characters"
DIAGRAM_FORMATS = ("svg", "png", "mermaid", "dot")
_SUFFIX_FORMATS = {".svg": "svg", ".png": "png", ".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid",
                   ".dot": "dot", ".gv": "dot"}


#: ``serve(engine, host, port, ready=callback)``: blocks until SIGINT/SIGTERM.
ServeFunction = Callable[..., None]


# --- commands ---------------------------------------------------------------------------------------


def _engine(args: argparse.Namespace, *, read_only: bool = False, **kw: Any) -> Any:
    from engine.wiring import open_engine  # noqa: PLC0415 - keeps `provision --help` fast

    if read_only:
        from engine.cli.guards import require_existing_database  # noqa: PLC0415
        from engine.config import db_url_from_env  # noqa: PLC0415

        require_existing_database(args.db or db_url_from_env())
    return open_engine(args.db, **kw)


def _out(text: str) -> None:
    print(text, flush=True)


def cmd_start(args: argparse.Namespace) -> int:
    """Create an attempt (validated before anything is stored) and print its id."""
    from engine.core.intake import parse_config_pairs, validate_start  # noqa: PLC0415

    config = parse_config_pairs(args.config)
    if args.sandbox_company:  # the element's sandbox-company flag; an explicit --config entry wins
        config.setdefault("use_sandbox", "true")
    inputs = dict(flow=args.flow, api_key=args.api_key, api_secret=args.api_secret,
                  callback_url=args.callback_url,
                  tags=args.tag, config=config, idempotency_key=args.idempotency_key,
                  callback_wait_s=args.callback_wait, customer=args.customer, replace=args.replace,
                  renewal=args.renewal)
    # Validate before opening the database, so bad input does not even create one (start re-checks).
    validate_start(element=args.element, name=args.name, **inputs)
    engine = _engine(args)
    try:
        attempt = engine.start(args.element, args.name, **inputs)
    finally:
        engine.close()
    _out(fmt.to_json({"id": attempt.id, "state": attempt.state.value}) if args.json else attempt.id)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the scheduler loop until SIGINT/SIGTERM (``--once``: until nothing is due now)."""
    from engine.cli.worker import run_worker  # noqa: PLC0415

    return run_worker(args, _engine, _out)


def cmd_prune(args: argparse.Namespace) -> int:
    """Fold renewal history older than an age into one summary row per attempt and day."""
    from engine.cli.prune import run_prune  # noqa: PLC0415
    from engine.config import RETENTION_ENV, history_retention_days_from_env  # noqa: PLC0415

    if args.history_older_than is not None:
        keep = parse_duration("--history-older-than", args.history_older_than)
        if keep.total_seconds() % 86400 or not keep:
            raise UsageError("--history-older-than", f"must be whole days (e.g. 90d), got "
                                                     f"{args.history_older_than[:40]!r}")
    elif history_retention_days_from_env():
        keep = timedelta(days=history_retention_days_from_env())
    else:
        raise UsageError("--history-older-than", f"give an age such as 90d, or set {RETENTION_ENV}")
    return run_prune(args.db, keep, dry_run=args.dry_run, batch=args.batch_size, as_json=args.json, out=_out)


def cmd_callback(args: argparse.Namespace) -> int:
    """Deliver a provider redirect URL (or its query string) to the engine."""
    engine = _engine(args)
    try:
        outcome = engine.handle_callback(args.url)
    finally:
        engine.close()
    state = outcome.state.value if outcome.state else None
    if args.json:
        _out(fmt.to_json({"status": outcome.status, "attempt_id": outcome.attempt_id, "state": state,
                          "reason": outcome.reason}))
    else:
        reason = f" ({outcome.reason})" if outcome.reason else ""
        _out(f"{outcome.status}: attempt {outcome.attempt_id} is {state}{reason}")
    return 0


def _listen(args: argparse.Namespace, command: str, what: str, banner: str) -> int:
    """Run the web function ``engine.main`` plugged in as ``args.<command>`` until SIGINT/SIGTERM."""
    run = getattr(args, command, None)
    if run is None:
        raise ProvisionError(f"`{command}` needs the {what}, which this entry point was not given",
                             hint="Run the `provision` program (engine.main:main), which plugs it in.")
    engine = _engine(args, role=command)
    halt = engine.keep_alive()  # listed by `provision workers`; takes part in key rotation
    try:
        run(engine, args.host, args.port, ready=lambda url: _out(banner.format(url=url)))
    finally:
        halt()
        engine.close()
    print(f"{command}: stopped", file=sys.stderr, flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Receive provider redirects over HTTP until SIGINT/SIGTERM."""
    return _listen(args, "serve", "web receiver", "serving callbacks on {url}/callback")


def cmd_console(args: argparse.Namespace) -> int:
    """Serve the operator console (its own listener) until SIGINT/SIGTERM."""
    return _listen(args, "console", "web console", "console on {url}/")


def cmd_list(args: argparse.Namespace) -> int:
    """Attempts (newest first) and counts per state."""
    older = parse_duration("--older-than", args.older_than) if args.older_than is not None else None
    newer = parse_duration("--newer-than", args.newer_than) if args.newer_than is not None else None
    engine = _engine(args, read_only=True)
    try:
        attempts = engine.list(args.state, element=args.element, older_than=older, newer_than=newer,
                               limit=args.limit, **list_filters(args))
        counts = engine.counts()
    finally:
        engine.close()
    if args.json:
        _out(fmt.to_json(fmt.list_dict(attempts, counts)))
    else:
        _out(fmt.format_list(attempts, counts, tty=sys.stdout.isatty()))
    return 0


def list_filters(args: argparse.Namespace) -> dict[str, Any]:
    """``Engine.list``'s optional filters that were given (``--reason``, ``--customer``)."""
    return {k: v for k, v in (("reason", args.reason), ("customer", args.customer)) if v is not None}


def cmd_show(args: argparse.Namespace) -> int:
    """One attempt with its timeline; the consent URL while REDIRECTED."""
    engine = _engine(args, read_only=True)
    try:
        attempt = engine.get(engine.resolve_id(args.id))
        history = engine.history(attempt.id)
        url = engine.redirect_url(attempt)
        link = engine.connect_link(attempt.id) if args.connect_link else None
    finally:
        engine.close()
    if args.json:
        data = fmt.attempt_dict(attempt, history, url)
        if link:
            data["connect_link"] = link
        _out(fmt.to_json(data))
    else:
        _out(fmt.format_attempt(attempt, history, url) + (f"\nconnect link: {link}" if link else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Health checks: exit 0 when every checked instance is healthy, 1 otherwise."""
    from engine.cli.lifecycle import format_checks, provisioned_ids, run_checks  # noqa: PLC0415

    if bool(args.id) == bool(args.all):
        raise UsageError("check", "give an attempt ID or --all (not both)")
    engine = _engine(args)
    try:
        rows, rc = run_checks(engine, provisioned_ids(engine) if args.all else [args.id])
    finally:
        engine.close()
    _out(fmt.to_json({"checks": rows}) if args.json else format_checks(rows))
    return rc


def _operator(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from engine.cli import bulk  # noqa: PLC0415

        if action in BULK_ACTIONS and bulk.is_bulk(args):
            engine = _engine(args)
            try:
                return bulk.run_bulk(action, args, engine, _out, as_json=bool(args.json))
            finally:
                engine.close()
        engine = _engine(args)
        try:
            attempt = getattr(engine, action)(engine.resolve_id(args.id))
        finally:
            engine.close()
        if args.json:
            _out(fmt.to_json({"id": attempt.id, "state": attempt.state.value,
                              "failure_reason": attempt.failure_reason}))
        else:
            reason = f" ({attempt.failure_reason})" if attempt.failure_reason else ""
            done = {"cancel": "cancelled", "restart": "restarted", "reauthorize": "re-authorising",
                    "disconnect": "disconnecting"}[action]
            _out(f"{done}: attempt {attempt.id} is {attempt.state.value}{reason}")
        return 0

    run.__doc__ = f"Operator action: {action} an attempt."
    return run


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply migrations without opening an engine (which would refuse an outdated PostgreSQL schema)."""
    from engine.config import db_url_from_env, open_database  # noqa: PLC0415
    from persistence.migrate import upgrade  # noqa: PLC0415

    db = open_database(args.db or db_url_from_env())
    try:
        revision = upgrade(db)
    finally:
        db.dispose()
    _out(fmt.to_json({"revision": revision}) if args.json else f"database at revision {revision}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Run the simulator in the foreground (options owned by ``sandbox.cli``)."""
    from sandbox import cli as sandbox_cli  # noqa: PLC0415

    # sandbox.cli declares --host/--port (it also serves `python -m sandbox`); checked here as serve's.
    host_name(args.host)
    port_number(str(args.port))

    return sandbox_cli.run(args)


def cmd_diagram(args: argparse.Namespace) -> int:
    """Render the machine, or one attempt's path, as SVG/PNG (graphviz) or Mermaid/DOT text."""
    fmt_name = diagram_format(args.format, args.output)
    if fmt_name == "png" and not args.output and sys.stdout.isatty():
        raise UsageError("--format", "png is binary; write it to a file with -o FILE")
    try:
        from engine.inspection import render as diagrams  # noqa: PLC0415 - optional; needs graphviz for svg/png
    except ImportError as exc:
        raise ProvisionError("diagram rendering is not available in this install",
                             hint=f"engine.inspection.render could not be imported ({exc})") from None
    if args.id:
        engine = _engine(args, read_only=True)
        try:
            attempt = engine.get(engine.resolve_id(args.id))
            result = diagrams.render_attempt(attempt, engine.history(attempt.id), fmt_name)
        finally:
            engine.close()
    else:
        result = diagrams.render_machine(fmt_name)
    data = result.encode() if isinstance(result, str) else result
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({fmt_name}, {len(data)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data if data.endswith(b"\n") or isinstance(result, bytes) else data + b"\n")
        sys.stdout.flush()
    return 0


def diagram_format(chosen: str | None, output: str | None) -> str:
    """The diagram format: ``--format``, else ``-o``'s suffix, else mermaid; a mismatch is refused.

    ``-o x.jpg`` once wrote Mermaid text into a .jpg: a file's suffix must name the format written.
    """
    if not output:
        return chosen or "mermaid"
    suffix = Path(output).suffix.lower()
    implied = _SUFFIX_FORMATS.get(suffix)
    known = ", ".join(sorted(_SUFFIX_FORMATS))
    if implied is None:
        raise UsageError("--output", f"{suffix or 'no suffix'!s} is not a diagram format; use one of {known}")
    if chosen and chosen != implied:
        raise UsageError("--format", f"{chosen} does not match the file {Path(output).name} ({implied})")
    return implied


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret under the new key (``engine.security.rotation``)."""
    from engine.cli.keys import run_rotate  # noqa: PLC0415

    return run_rotate(args.db, batch=args.batch_size, as_json=args.json, out=_out)


def cmd_workers(args: argparse.Namespace) -> int:
    """The live workers: last heartbeat, key ids held, leases (``engine.cli.workers``)."""
    from engine.cli.workers import run_workers  # noqa: PLC0415

    return run_workers(args.db, as_json=args.json, out=_out)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run every flow against an in-process sandbox."""
    from engine.cli.demo import run_demo  # noqa: PLC0415

    return run_demo(args.db, out=sys.stdout, as_json=args.json)


# --- the parser -------------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    # On subcommands the defaults are SUPPRESS so `provision --json list` is not undone by the
    # subparser's own default; options may thus come before or after the verb.
    default: Any = argparse.SUPPRESS if sub else None
    parser.add_argument("--db", metavar="URL", default=default,
                        help="database URL (env PROVISION_DB_URL, default sqlite:///provision.db)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if sub else False,
                        help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS if sub else 0,
                        help="log to stderr (-vv for debug)")


def package_version() -> str:
    """The installed distribution's version (package metadata), or ``unknown`` in a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("element-provisioner")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The complete ``provision`` argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description="Provision Cloud Elements instances as persisted "
                                     "state machines. Guide: docs/operator-guide.md; design: docs/design.md.")
    _global_options(parser, sub=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help_text, description=help_text)
        _global_options(p, sub=True)
        p.set_defaults(func=func)
        return p

    add("demo", cmd_demo, "start a sandbox on a free loopback port and run every flow end to end")
    from sandbox import cli as sandbox_cli  # noqa: PLC0415

    sandbox_cli.add_arguments(add("sandbox", cmd_sandbox,
                                  "run the Cloud Elements simulator in the foreground"))

    p = add("start", cmd_start, "create an attempt; prints its id")
    p.add_argument("--element", required=True, metavar="KEY", help="element key, e.g. quickbooks")
    p.add_argument("--name", required=True, help="instance name")
    p.add_argument("--flow", choices=("oauth1", "oauth2", "quick"), help="default: the element's usual flow")
    p.add_argument("--api-key", metavar="K", help="oauth.api.key")
    p.add_argument("--api-secret", metavar="S", help="oauth.api.secret (stored encrypted, never printed)")
    p.add_argument("--callback-url", metavar="URL", help="oauth.callback.url (where the provider redirects)")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="instance tag (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra element configuration (repeatable)")
    p.add_argument("--idempotency-key", metavar="K",
                   help="a second start with the same key returns the first attempt")
    p.add_argument("--sandbox-company", action="store_true",
                   help="connect a QuickBooks sandbox company (sends use_sandbox=true; development keys "
                        "need it)")
    p.add_argument("--callback-wait", metavar="SECONDS", help="how long the user has to consent")
    p.add_argument("--customer", metavar="C",
                   help="your own id for the account (at most 200 printable characters); one live "
                        "attempt per customer and element")
    p.add_argument("--replace", action="store_true",
                   help="start even though the customer has a live attempt for this element")
    p.add_argument("--renewal", choices=("engine", "platform"),
                   help="who renews the tokens once provisioned (default: platform for oauth1/oauth2, "
                        "engine for quick)")

    p = add("worker", cmd_worker, "run the scheduler loop")
    p.add_argument("--once", action="store_true", help="do what is due now, then exit")
    p.add_argument("--concurrency", type=whole_number("--concurrency", 1, 256), default=1, metavar="N",
                   help="steps in flight (default 1, at most 256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per transition (the summary stays)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="transition lines as text (default) or JSON lines")
    add_metrics_options(p)

    p = add("callback", cmd_callback, "deliver a provider redirect URL to the engine")
    p.add_argument("url", metavar="URL", help="the full redirect URL (or its query string); quote it")

    p = add("serve", cmd_serve, "the public HTTP callback receiver (GET /callback, /healthz, /readyz)")
    p.add_argument("--host", type=host_name, default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8050, help="port (default 8050, 0 = any free port)")

    p = add("console", cmd_console, "the operator console on its own listener (login off loopback: "
            "PROVISION_CONSOLE_TOKEN or PROVISION_CONSOLE_PASSWORD_HASH)")
    p.add_argument("--host", type=host_name, default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8060, help="port (default 8060, 0 = any free port)")

    p = add("prune", cmd_prune, "fold old renewal history into daily summaries (other transitions are kept)")
    p.add_argument("--history-older-than", metavar="DURATION",
                   help="whole days, e.g. 90d (default: env PROVISION_HISTORY_RETENTION_DAYS)")
    p.add_argument("--dry-run", action="store_true", help="count what would be folded; change nothing")
    p.add_argument("--batch-size", type=whole_number("--batch-size", 1, 100_000), default=5000, metavar="N",
                   help="rows per transaction")

    p = add("list", cmd_list, "list attempts with counts per state")
    p.add_argument("--state", metavar="S", help="only attempts in state S (e.g. REDIRECTED)")
    p.add_argument("--element", metavar="KEY", help="only this element")
    p.add_argument("--customer", metavar="C", help="only this customer's attempts")
    p.add_argument("--older-than", metavar="DURATION", help="created more than DURATION ago (30m, 2h, 7d)")
    p.add_argument("--newer-than", metavar="DURATION", help="created less than DURATION ago")
    p.add_argument("--limit", type=whole_number("--limit", 1, 100_000), metavar="N",
                   help="at most N attempts (1-100,000)")
    p.add_argument("--reason", metavar="R", help="only FAILED attempts with this failure reason "
                   "(e.g. invalid_database)")

    add("workers", cmd_workers, "live workers: last heartbeat, encryption key ids held, leases")

    p = add("show", cmd_show, "one attempt with its timeline (secrets redacted)")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--connect-link", action="store_true",
                   help="also issue a single-use link for the customer to the consent URL (needs "
                        "PROVISION_PUBLIC_URL; revokes the attempt's previous link)")

    p = add("check", cmd_check, "health check: ask the platform about PROVISIONED instances")
    p.add_argument("id", metavar="ID", nargs="?", help="an attempt id")
    p.add_argument("--all", action="store_true", help="every PROVISIONED attempt")

    p = add("diagram", cmd_diagram, "render the machine, or one attempt's path")
    p.add_argument("id", metavar="ID", nargs="?", help=ID_HELP + " (default: the whole machine)")
    p.add_argument("--format", choices=DIAGRAM_FORMATS, help="default: from -o's suffix, else mermaid")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    for action, text in (("cancel", "fail a non-terminal attempt as cancelled"),
                         ("restart", "move a FAILED attempt back to NEW (history is kept)"),
                         ("reauthorize", "new consent for the same instance after renewal_rejected"),
                         ("disconnect", "revoke the engine-held token and delete the instance (a worker "
                                        "finishes it: DISCONNECTING, then DISCONNECTED)")):
        p = add(action, _operator(action), text)
        if action in BULK_ACTIONS:
            from engine.cli.bulk import add_filter_arguments  # noqa: PLC0415

            p.add_argument("id", metavar="ID", nargs="?", help=ID_HELP + " (or filters, for a bulk action)")
            add_filter_arguments(p)
        else:
            p.add_argument("id", metavar="ID", help=ID_HELP)

    from engine.cli import events as events_cli  # noqa: PLC0415 - issue 10/12: the feed and redelivery

    events_cli.add_commands(add, _global_options, _engine, _out)

    for group, action, func, text, group_text in (
        ("db", "upgrade", cmd_db_upgrade, "apply migrations; prints the revision", "database maintenance"),
        (
            "keys",
            "rotate",
            cmd_keys_rotate,
            "re-encrypt every stored secret under the new key (resumable)",
            "encryption key maintenance",
        ),
    ):
        nested = (
            add(group, lambda a: 0, group_text)
            .add_subparsers(dest=f"{group}_command", metavar="ACTION", required=True)
            .add_parser(action, help=text)
        )
        _global_options(nested, sub=True)
        nested.set_defaults(func=func)
        if group == "keys":
            nested.add_argument(
                "--batch-size", type=whole_number("--batch-size", 1, 10_000), default=200, metavar="N",
                help="rows per transaction (1-10,000)"
            )
    return parser


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
    except UsageError as exc:  # a value that an option's type refused (whole_number, host_name)
        failures.report(str(exc), exc=exc, as_json="--json" in (sys.argv[1:] if argv is None else argv))
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
        return fail(str(exc), exc, 2)
    except ProvisionError as exc:
        return fail(str(exc), exc, 1)
    except KeyboardInterrupt as exc:
        return fail("interrupted", exc, 130)
    except Exception as exc:  # noqa: BLE001 - database/network failures: one line, traceback with -v
        if args.verbose:
            log.exception("unexpected failure")
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        return fail(f"{type(exc).__name__}: {first}".rstrip(": ") + " (run with -v for details)", exc, 1)

"""The ``provision`` sub-commands: each ``cmd_*`` turns parsed arguments into ``Engine`` calls.

``engine.cli.parser`` wires them to their options; ``engine.cli.main`` runs one and maps its errors
to exit codes. Output formatting and secret redaction live in ``engine.cli.output``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from engine.cli import output as fmt
from engine.cli.options import UsageError, host_name, parse_duration, port_number
from engine.errors import ProvisionError

PROG = "provision"
BULK_ACTIONS = ("cancel", "restart")  # by filter: --state/--reason/... with --dry-run, then --yes
_SUFFIX_FORMATS = {".svg": "svg", ".png": "png", ".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid",
                   ".dot": "dot", ".gv": "dot"}


#: ``serve(engine, host, port, ready=callback)``: blocks until SIGINT/SIGTERM.
ServeFunction = Callable[..., None]


# --- commands ---------------------------------------------------------------------------------------


def engine_for(args: argparse.Namespace, *, read_only: bool = False, **kw: Any) -> Any:
    from engine.wiring import open_engine  # noqa: PLC0415 - keeps `provision --help` fast

    if read_only:
        from engine.cli.guards import require_existing_database  # noqa: PLC0415
        from engine.config import db_url_from_env  # noqa: PLC0415

        require_existing_database(args.db or db_url_from_env())
    return open_engine(args.db, **kw)


def emit(text: str) -> None:
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
    request = validate_start(element=args.element, name=args.name, **inputs)
    if not args.offline:  # an unknown element is refused before anything is stored (or created)
        from engine.wiring import check_element_online  # noqa: PLC0415

        warning = check_element_online(request.element_key, request.config.keys()).warning()
        if warning:
            print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)
    engine = engine_for(args)
    try:
        attempt = engine.start(args.element, args.name, **inputs)
    finally:
        engine.close()
    emit(fmt.to_json({"id": attempt.id, "state": attempt.state.value}) if args.json else attempt.id)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the scheduler loop until SIGINT/SIGTERM (``--once``: until nothing is due now)."""
    from engine.cli.worker import run_worker  # noqa: PLC0415

    return run_worker(args, engine_for, emit)


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
    if args.dry_run:  # a count only: never create a database
        from engine.cli.guards import require_existing_database  # noqa: PLC0415
        from engine.config import db_url_from_env  # noqa: PLC0415

        require_existing_database(args.db or db_url_from_env())
    return run_prune(args.db, keep, dry_run=args.dry_run, batch=args.batch_size, as_json=args.json, out=emit)


def cmd_callback(args: argparse.Namespace) -> int:
    """Deliver a provider redirect URL (or its query string) to the engine."""
    engine = engine_for(args)
    try:
        outcome = engine.handle_callback(args.url)
    finally:
        engine.close()
    state = outcome.state.value if outcome.state else None
    if args.json:
        emit(fmt.to_json({"status": outcome.status, "attempt_id": outcome.attempt_id, "state": state,
                          "reason": outcome.reason}))
    else:
        reason = f" ({outcome.reason})" if outcome.reason else ""
        emit(f"{outcome.status}: attempt {outcome.attempt_id} is {state}{reason}")
    return 0


def _listen(args: argparse.Namespace, command: str, what: str, banner: str) -> int:
    """Run the web function ``engine.main`` plugged in as ``args.<command>`` until SIGINT/SIGTERM."""
    run = getattr(args, command, None)
    if run is None:
        raise ProvisionError(f"`{command}` needs the {what}, which this entry point was not given",
                             hint="Run the `provision` program (engine.main:main), which plugs it in.")
    engine = engine_for(args, role=command)
    halt = engine.keep_alive()  # listed by `provision workers`; takes part in key rotation
    try:
        run(engine, args.host, args.port, ready=lambda url: emit(banner.format(url=url)))
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
    engine = engine_for(args, read_only=True)
    try:
        attempts = engine.list(args.state, element=args.element, older_than=older, newer_than=newer,
                               limit=args.limit, **list_filters(args))
        counts = engine.counts()
    finally:
        engine.close()
    if args.json:
        emit(fmt.to_json(fmt.list_dict(attempts, counts)))
    else:
        emit(fmt.format_list(attempts, counts, tty=sys.stdout.isatty()))
    return 0


def list_filters(args: argparse.Namespace) -> dict[str, Any]:
    """``Engine.list``'s optional filters that were given (``--reason``, ``--customer``)."""
    return {k: v for k, v in (("reason", args.reason), ("customer", args.customer)) if v is not None}


def cmd_show(args: argparse.Namespace) -> int:
    """One attempt with its timeline; the consent URL while REDIRECTED."""
    engine = engine_for(args, read_only=True)
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
        emit(fmt.to_json(data))
    else:
        emit(fmt.format_attempt(attempt, history, url) + (f"\nconnect link: {link}" if link else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Health checks of one attempt, ``--all`` PROVISIONED ones, or those that filters select (bulk).

    Exit 0 when every checked instance is healthy, 1 otherwise. Filters work as for bulk
    ``restart``/``cancel`` (``--dry-run`` counts, ``--yes`` acts); ``--all`` needs no ``--yes``.
    """
    from engine.cli import bulk, progress  # noqa: PLC0415
    from engine.cli.lifecycle import format_checks, provisioned_ids, run_checks  # noqa: PLC0415

    filtered = any(getattr(args, name, None) is not None for name in bulk.FILTERS)
    if sum((bool(args.id), bool(args.all), filtered)) != 1:
        raise UsageError("check", "give an attempt ID, --all, or filters such as --element quickbooks "
                                  "(one of them)")
    if args.state is not None:
        bulk.eligible_states("check", args)  # PROVISIONED only: refused before anything is opened
    if args.id and (args.dry_run or args.yes):
        raise UsageError("--dry-run" if args.dry_run else "--yes", "applies to --all or filters only")
    engine = engine_for(args, read_only=True)  # nothing to check in a database that does not exist
    try:
        if args.id:
            # A prefix resolved, an unknown id refused (exit 2) before any check runs.
            ids = [engine.get(engine.resolve_id(args.id)).id]
        else:
            ids = provisioned_ids(engine) if args.all else bulk.selected_ids("check", args, engine)
            if (args.dry_run or not args.all) and not bulk.go_ahead("check", ids, args, emit,
                                                                   as_json=bool(args.json)):
                return 0
        shown = len(ids) > 1 and progress.wanted(as_json=bool(args.json), quiet=args.quiet)
        with progress.bar("check", len(ids), enabled=shown) as advance:
            rows, rc = run_checks(engine, ids, advance)
    finally:
        engine.close()
    emit(fmt.to_json({"checks": rows}) if args.json else format_checks(rows))
    return rc


def operator_command(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from engine.cli import bulk  # noqa: PLC0415

        if action in BULK_ACTIONS and bulk.is_bulk(args):
            engine = engine_for(args)
            try:
                return bulk.run_bulk(action, args, engine, emit, as_json=bool(args.json))
            finally:
                engine.close()
        engine = engine_for(args)
        try:
            attempt = getattr(engine, action)(engine.resolve_id(args.id))
        finally:
            engine.close()
        if args.json:
            emit(fmt.to_json({"id": attempt.id, "state": attempt.state.value,
                              "failure_reason": attempt.failure_reason}))
        else:
            reason = f" ({attempt.failure_reason})" if attempt.failure_reason else ""
            done = {"cancel": "cancelled", "restart": "restarted", "reauthorize": "re-authorising",
                    "disconnect": "disconnecting"}[action]
            emit(f"{done}: attempt {attempt.id} is {attempt.state.value}{reason}")
        return 0

    run.__doc__ = f"Operator action: {action} an attempt."
    return run


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply migrations without opening an engine (which would refuse an outdated PostgreSQL schema),
    then the realm backfill when one is pending and a key is configured (``engine.core.realm_backfill``)."""
    from engine.config import db_url_from_env, open_database  # noqa: PLC0415
    from engine.core.realm_backfill import backfill_pending  # noqa: PLC0415
    from persistence.migrate import upgrade  # noqa: PLC0415

    url = args.db or db_url_from_env()
    db = open_database(url)
    try:
        revision = upgrade(db)
        pending = backfill_pending(db)
    finally:
        db.dispose()
    backfill = _realm_backfill(url) if pending else None
    if args.json:
        shown = {k: v for k, v in (backfill or {}).items() if k != "lines"}
        emit(fmt.to_json({"revision": revision, **({"realm_backfill": shown} if shown else {})}))
        return 0
    emit(f"database at revision {revision}")
    for line in (backfill or {}).get("lines", []):
        emit(line)
    return 0


def _realm_backfill(url: str) -> dict[str, Any]:
    """Run the pending realm backfill with the configured key; without one, say where it will run."""
    from engine.core.realm_backfill import backfill_realms  # noqa: PLC0415
    from engine.errors import SecretKeyError  # noqa: PLC0415
    from engine.wiring import open_repository  # noqa: PLC0415

    try:
        repo = open_repository(url, migrate=False)
    except SecretKeyError as exc:
        line = (f"realm backfill: pending, not run here ({exc.message}); it runs when an engine opens "
                "with the key (`provision worker`, open_engine)")
        return {"pending": True, "done": False, "not_run": exc.message, "lines": [line]}
    try:
        report = backfill_realms(repo, now=repo.database_time)
    finally:
        repo.close()
    return {**report.to_dict(), "lines": report.lines()}


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
        engine = engine_for(args, read_only=True)
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

    return run_rotate(args.db, batch=args.batch_size, as_json=args.json, out=emit, quiet=args.quiet)


def cmd_workers(args: argparse.Namespace) -> int:
    """The live workers: last heartbeat, key ids held, leases (``engine.cli.workers``)."""
    from engine.cli.workers import run_workers  # noqa: PLC0415

    return run_workers(args.db, as_json=args.json, out=emit)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run every flow against an in-process sandbox."""
    from engine.cli.demo import run_demo  # noqa: PLC0415

    return run_demo(args.db, out=sys.stdout, as_json=args.json)

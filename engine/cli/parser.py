"""The ``provision`` argument parser: every sub-command, its options and their help texts.

The commands themselves live in ``engine.cli.commands``; ``engine.cli.main`` parses and runs them.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from engine.cli.commands import (
    BULK_ACTIONS,
    cmd_callback,
    cmd_check,
    cmd_console,
    cmd_db_upgrade,
    cmd_demo,
    cmd_diagram,
    cmd_keys_rotate,
    cmd_list,
    cmd_prune,
    cmd_sandbox,
    cmd_serve,
    cmd_show,
    cmd_start,
    cmd_worker,
    cmd_workers,
    emit,
    engine_for,
    operator_command,
)
from engine.cli.options import ArgumentsError, host_name, port_number, whole_number
from engine.cli.worker import add_metrics_options

PROG = "provision"
ID_HELP = "an attempt id, or a unique prefix of at least 4 characters"
DIAGRAM_FORMATS = ("svg", "png", "mermaid", "dot")

class Parser(argparse.ArgumentParser):
    """argparse's parser, raising ``ArgumentsError`` instead of printing and exiting, so that
    ``engine.cli.main`` reports a bad command line like any other input error (JSON under
    ``--json``); sub-command parsers are of the same class (``add_subparsers`` takes the parent's)."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's contract
        raise ArgumentsError(message, self.format_usage())


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
    parser = Parser(prog=PROG, description="Provision Cloud Elements instances as persisted "
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
    p.add_argument("--offline", action="store_true",
                   help="do not ask the platform whether the element exists (GET /elements/{key}) first")

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
    p.add_argument("id", metavar="ID", nargs="?", help=ID_HELP + " (or --all, or filters)")
    p.add_argument("--all", action="store_true", help="every PROVISIONED attempt (no --yes needed)")
    from engine.cli.bulk import add_filter_arguments  # noqa: PLC0415

    add_filter_arguments(p)

    p = add("diagram", cmd_diagram, "render the machine, or one attempt's path")
    p.add_argument("id", metavar="ID", nargs="?", help=ID_HELP + " (default: the whole machine)")
    p.add_argument("--format", choices=DIAGRAM_FORMATS, help="default: from -o's suffix, else mermaid")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    for action, text in (("cancel", "fail a non-terminal attempt as cancelled"),
                         ("restart", "move a FAILED attempt back to NEW (history is kept)"),
                         ("reauthorize", "new consent for the same instance after renewal_rejected"),
                         ("disconnect", "revoke the engine-held token and delete the instance (a worker "
                                        "finishes it: DISCONNECTING, then DISCONNECTED)")):
        p = add(action, operator_command(action), text)
        if action in BULK_ACTIONS:
            from engine.cli.bulk import add_filter_arguments  # noqa: PLC0415

            p.add_argument("id", metavar="ID", nargs="?", help=ID_HELP + " (or filters, for a bulk action)")
            add_filter_arguments(p)
        else:
            p.add_argument("id", metavar="ID", help=ID_HELP)

    from engine.cli import events as events_cli  # noqa: PLC0415 - issue 10/12: the feed and redelivery

    events_cli.add_commands(add, _global_options, engine_for, emit)

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
            nested.add_argument("-q", "--quiet", action="store_true", help="no spinner on a terminal")
    return parser

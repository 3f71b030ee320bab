"""``provision events``: the event feed, and ``provision events redeliver`` (issue 10/12).

``provision events [--after SEQ] [--limit N] [--type TYPE ...]`` prints the events after cursor
SEQ, oldest first (only those of the given types, if any); the last line (text) or ``last_seq``
(``--json``) is the cursor to resume from. ``--follow`` keeps printing new events as they commit
(JSON Lines with ``--json``) until SIGINT or SIGTERM. ``provision events redeliver SEQ`` /
``--failed`` queues webhook events again.
"""
from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from engine.cli import output as fmt
from engine.core.events import event_types
from engine.errors import InvalidInputError
from engine.signals import stop_on_signals

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
Out = Callable[[str], None]
FOLLOW_POLL_S = 0.5


def _line(event: Any) -> str:
    data = event.data
    extra = f"  {data['reason']}" if data.get("reason") else ""
    if data.get("consent_url"):
        extra += f"  {data['consent_url']}"
    stamp = event.payload["timestamp"]
    return f"{event.seq:>8}  {stamp}  {event.type:<38} {event.attempt_id}  {data['state']}{extra}"


def run_feed(args: argparse.Namespace, engine: Any, out: Out, stop: threading.Event | None = None) -> int:
    """Print the feed after ``args.after``; with ``args.follow`` keep polling until ``stop`` is set."""
    if args.after < 0:
        raise InvalidInputError("--after", f"must be a sequence number >= 0, got {args.after}")
    if not 1 <= args.limit <= 10_000:
        raise InvalidInputError("--limit", f"must be from 1 to 10000, got {args.limit}")
    event_types(args.types, field="--type")  # refused here, naming the option, before any read
    cursor = args.after
    if not args.follow:
        batch = engine.events(after=cursor, limit=args.limit, types=args.types)
        cursor = batch.cursor
        if args.json:
            out(fmt.to_json({"events": [e.as_dict() for e in batch], "last_seq": cursor}))
        else:
            for event in batch:
                out(_line(event))
        return 0
    stop = stop or threading.Event()
    while not stop.is_set():
        batch = engine.events(after=cursor, limit=args.limit, types=args.types)
        for event in batch:
            # JSON Lines: one compact object per event, so a consumer can read line by line.
            out(json.dumps(event.as_dict(), default=str) if args.json else _line(event))
        cursor = batch.cursor  # with --type, past the other events looked at
        if len(batch) < args.limit:
            stop.wait(FOLLOW_POLL_S)
    return 0


def cmd_events(args: argparse.Namespace, engine_of: Callable[..., Any], out: Out) -> int:
    """The feed (``--follow``: until SIGINT/SIGTERM); reading it never creates a database."""
    engine = engine_of(args, read_only=True)
    stop = threading.Event()
    try:
        with stop_on_signals(stop.set, doing="stopping the feed") if args.follow else nullcontext():
            return run_feed(args, engine, out, stop)
    finally:
        engine.close()


def cmd_redeliver(args: argparse.Namespace, engine_of: Callable[..., Any], out: Out) -> int:
    """Queue webhook event SEQ (or every dead-lettered one) for delivery again."""
    if (args.seq is None) == (not args.failed):
        raise InvalidInputError("redeliver", "give an event sequence number or --failed (not both)",
                                hint="e.g. `provision events redeliver 42` or `... redeliver --failed`")
    engine = engine_of(args)
    try:
        count = engine.redeliver(args.seq, failed=args.failed)
    finally:
        engine.close()
    if args.seq is not None and count == 0:
        raise InvalidInputError("SEQ", f"no event with sequence number {args.seq}",
                                hint="List events with `provision events`.")
    out(fmt.to_json({"requeued": count}) if args.json
        else f"{count} event{'s' if count != 1 else ''} queued for redelivery")
    return 0


def add_commands(add: Add, global_options: Callable[..., None],
                 engine_of: Callable[..., Any], out: Out) -> None:
    """Register ``events`` and ``events redeliver`` through ``engine.cli.main``'s ``add``."""
    p = add("events", lambda a: cmd_events(a, engine_of, out),
            "the event feed: events after a cursor (--follow: as they commit)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ (default 0)")
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="at most N events per read (default 100)")
    p.add_argument("--type", dest="types", action="append", metavar="TYPE",
                   help="only events of this type, e.g. attempt.redirected (repeat for several)")
    p.add_argument("--follow", action="store_true", help="keep printing new events until interrupted")
    actions = p.add_subparsers(dest="events_command", metavar="ACTION")
    r = actions.add_parser("redeliver", help="send webhook events again: SEQ, or every dead-lettered one")
    global_options(r, sub=True)
    r.add_argument("seq", type=int, nargs="?", metavar="SEQ", help="the event's sequence number")
    r.add_argument("--failed", action="store_true", help="every dead-lettered event")
    r.set_defaults(func=lambda a: cmd_redeliver(a, engine_of, out))

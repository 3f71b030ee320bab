"""Bulk ``provision restart|cancel|check`` by filter: ``--dry-run`` counts, ``--yes`` acts (issue 18 item 5).

``provision restart --state failed --reason invalid_database --older-than 1h --dry-run`` lists what
would be restarted; the same command with ``--yes`` restarts them, one operator move each (an
attempt that moved meanwhile is skipped and counted). Without ``--yes`` and without a terminal to
ask on, nothing is done and the command exits 2. ``check`` takes the same filters (its selection
is PROVISIONED attempts only) and prints one health row per attempt. On a terminal a progress bar
runs on stderr (``engine.cli.progress``; ``-q`` turns it off).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from engine.cli import progress
from engine.cli.options import UsageError, parse_duration
from engine.errors import ProvisionError
from states.model import CANCELLABLE, State

FILTERS = ("state", "element", "customer", "reason", "older_than", "newer_than")
MAX_SELECTION = 100_000
# The states each bulk action applies to: a selection never holds an attempt the action would
# refuse (cancel ends attempts on their way, never a connection: that is disconnect).
ELIGIBLE: dict[str, tuple[State, ...]] = {
    "cancel": tuple(s for s in State if s in CANCELLABLE),
    "restart": (State.FAILED,),
    "check": (State.PROVISIONED,),
}


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """The selection options of a bulk action (beside the single ``ID``)."""
    parser.add_argument("--state", metavar="S", help="bulk: attempts in state S")
    parser.add_argument("--element", metavar="KEY", help="bulk: attempts of this element")
    parser.add_argument("--customer", metavar="C", help="bulk: this customer's attempts")
    parser.add_argument("--reason", metavar="R", help="bulk: FAILED attempts with this failure reason")
    parser.add_argument("--older-than", metavar="DURATION", help="bulk: created more than DURATION ago")
    parser.add_argument("--newer-than", metavar="DURATION", help="bulk: created less than DURATION ago")
    parser.add_argument("--dry-run", action="store_true", help="bulk: list what would change; change nothing")
    parser.add_argument("--yes", action="store_true", help="bulk: act without asking")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar on a terminal")


def is_bulk(args: argparse.Namespace) -> bool:
    """True when a filter was given (then ``ID`` must not be)."""
    bulk = any(getattr(args, name, None) is not None for name in FILTERS)
    if bulk and args.id:
        raise UsageError("ID", "give an id or filters (--state, --reason, ...), not both")
    if not bulk and not args.id:
        raise UsageError("ID", "give an attempt id, or filters such as --state failed for a bulk action")
    if not bulk and (args.dry_run or args.yes):
        raise UsageError("--dry-run" if args.dry_run else "--yes", "applies to bulk actions (filters) only")
    return bulk


def eligible_states(action: str, args: argparse.Namespace) -> tuple[State, ...]:
    """The states ``action`` selects: ``--state`` when given (and one it applies to), else all of them."""
    allowed = ELIGIBLE[action]
    names = ", ".join(s.value for s in allowed)
    if args.state is None:
        return allowed
    try:
        state = State(str(args.state).upper())
    except ValueError:
        raise UsageError("--state", f"unknown state {args.state!r}; {action} applies to {names}") from None
    if state not in allowed:
        raise UsageError("--state", f"{action} applies to {names} attempts only, not {state.value}; "
                                    "leave --state out or pick one of them")
    return (state,)


def selected_ids(action: str, args: argparse.Namespace, engine: Any) -> list[str]:
    """The ids ``args``' filters select among the states ``action`` applies to, newest first."""
    older = parse_duration("--older-than", args.older_than) if args.older_than else None
    newer = parse_duration("--newer-than", args.newer_than) if args.newer_than else None
    selected = [a for state in eligible_states(action, args)
                for a in engine.list(state, element=args.element, customer=args.customer,
                                     reason=args.reason, older_than=older, newer_than=newer,
                                     limit=MAX_SELECTION)]
    selected.sort(key=lambda a: (a.created_at, a.id), reverse=True)
    return [a.id for a in selected[:MAX_SELECTION]]


def go_ahead(action: str, ids: list[str], args: argparse.Namespace, out: Callable[[str], None], *,
             as_json: bool, confirm: Callable[[str], bool] | None = None) -> bool:
    """Print the dry run, or ask (``--yes`` skips the question); True when ``action`` may run."""
    if args.dry_run:
        if as_json:
            out(_json({"action": action, "dry_run": True, "count": len(ids), "ids": ids}))
        else:
            out("\n".join([*ids, f"{action}: {_attempts(len(ids))} would change (dry run; nothing changed)"]))
        return False
    if not args.yes:
        ask = confirm if confirm is not None else (_ask if sys.stdin.isatty() else None)
        if ask is None:
            raise UsageError("--yes", f"{action} of {_attempts(len(ids))} needs --yes when there is no "
                                      "terminal to confirm on (try --dry-run first)")
        if not ask(f"{action} {_attempts(len(ids))}? [y/N] "):
            out(f"{action}: nothing changed")
            return False
    return True


def run_bulk(action: str, args: argparse.Namespace, engine: Any, out: Callable[[str], None],
             *, as_json: bool, confirm: Callable[[str], bool] | None = None) -> int:
    """Select attempts by ``args``' filters and apply ``action`` to each (or only count them)."""
    ids = selected_ids(action, args, engine)
    if not go_ahead(action, ids, args, out, as_json=as_json, confirm=confirm):
        return 0
    done: list[str] = []
    skipped: list[str] = []
    shown = progress.wanted(as_json=as_json, quiet=bool(getattr(args, "quiet", False)))
    with progress.bar(f"{action}", len(ids), enabled=shown) as advance:
        for attempt_id in ids:
            try:
                getattr(engine, action)(attempt_id)
                done.append(attempt_id)
            except ProvisionError:  # moved meanwhile (InvalidTransitionError...): not ours to change any more
                skipped.append(attempt_id)
            advance()
    if as_json:
        out(_json({"action": action, "count": len(done), "ids": done, "skipped": skipped}))
    else:
        out(f"{action}: {len(done)} changed, {len(skipped)} skipped (they had moved)")
    return 0


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


def _ask(question: str) -> bool:
    return input(question).strip().lower() in ("y", "yes")


def _json(data: dict[str, Any]) -> str:
    from engine.cli.output import to_json  # noqa: PLC0415

    return to_json(data)

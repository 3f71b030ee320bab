"""``provision check ID|--all`` (issue 10/12 must-have 5): health checks from the command line."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.cli import output as fmt
from engine.core.facade import Engine
from engine.errors import ProvisionError
from states.model import State

PAGE = 1000


def provisioned_ids(engine: Engine) -> list[str]:
    """Every PROVISIONED attempt's id, newest first (paged by creation time)."""
    ids: list[str] = []
    before = None
    while True:
        page = engine.list(State.PROVISIONED, limit=PAGE, created_before=before)
        ids.extend(a.id for a in page)
        if len(page) < PAGE:
            return ids
        before = page[-1].created_at


def run_checks(engine: Engine, ids: list[str],
               advance: Callable[[], None] = lambda: None) -> tuple[list[dict[str, Any]], int]:
    """Check each attempt; one row per attempt and the exit code (1 if any is unhealthy or failed).

    A check that raises (the platform unreachable, an attempt not PROVISIONED) is reported in its
    row and the others still run: ``--all`` must not stop at the first bad instance. ``advance``
    is called after each check (a progress bar's).
    """
    rows: list[dict[str, Any]] = []
    rc = 0
    for attempt_id in ids:
        try:
            a = engine.check(attempt_id)
        except ProvisionError as exc:
            rows.append({"id": attempt_id, "health": None, "reason": None, "error": str(exc)})
            rc = 1
            continue
        finally:
            advance()
        rows.append({"id": a.id, "customer": a.customer, "instance_id": a.instance_id, "health": a.health,
                     "reason": a.health_reason, "checked_at": fmt.iso(a.last_check_at)})
        rc = rc or int(a.health != "healthy")
    return rows, rc


def format_checks(rows: list[dict[str, Any]]) -> str:
    """One line per attempt: ``ID  healthy`` / ``ID  unhealthy (instance_disabled)`` / ``ID  error: ...``."""
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['id']}  error: {r['error']}")
        else:
            lines.append(f"{r['id']}  {r['health']}{' (' + r['reason'] + ')' if r['reason'] else ''}")
    return "\n".join(lines) or "(no PROVISIONED attempts)"

"""``provision workers``: the live engines, their last heartbeat, keys and leases (migration 0009)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from engine.cli.guards import require_existing_database
from engine.cli.output import human_time, iso, to_json
from engine.config import db_url_from_env, engine_settings_from_env, open_database
from persistence.workers import DEAD_AFTER_LEASES, WorkerRow, live_workers

COLUMNS = ("worker", "role", "host", "pid", "started", "last tick", "keys", "leases")


def dead_after(environ: Mapping[str, str] | None = None) -> timedelta:
    """How old a heartbeat may be before its worker counts as dead: a few lease periods."""
    return timedelta(seconds=DEAD_AFTER_LEASES * engine_settings_from_env(environ).lease_s)


def worker_dict(w: WorkerRow) -> dict[str, Any]:
    """One worker in ``--json``."""
    return {"worker_id": w.worker_id, "role": w.role, "host": w.host, "pid": w.pid,
            "started_at": iso(w.started_at), "last_tick_at": iso(w.last_tick_at),
            "key_ids": list(w.key_ids), "leases": w.leases}


def format_workers(rows: list[WorkerRow]) -> str:
    """Aligned columns, or a line saying that no worker is alive."""
    if not rows:
        return "no live workers"
    table = [COLUMNS] + [(w.worker_id, w.role, w.host, str(w.pid), human_time(w.started_at),
                          human_time(w.last_tick_at), ",".join(w.key_ids) or "-", str(w.leases))
                         for w in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip() for r in table)


def run_workers(db_url: str | None, *, as_json: bool, out: Callable[[str], None]) -> int:
    """The body of ``provision workers``."""
    url = db_url or db_url_from_env()
    require_existing_database(url)  # a read: never create a database (or its key file)
    db = open_database(url)
    try:
        rows = live_workers(db, dead_after())
    finally:
        db.dispose()
    out(to_json({"workers": [worker_dict(w) for w in rows]}) if as_json else format_workers(rows))
    return 0

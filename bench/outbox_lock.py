"""What the events outbox's old commit lock cost: event-writing commits per second on PostgreSQL.

Every transaction that writes a transition inserts a ``history`` row, and the row's trigger writes
its event. Until migration 0012 that trigger took one advisory lock in the COMMIT and held it
through the WAL flush, so that the feed's ``seq`` order was the commit order: such commits flushed
one after another, PostgreSQL could not share one flush between several of them (group commit),
and the database accepted at most about one of them per WAL flush, whatever the number of cores.
Since 0012 the events are written without a lock and positioned after their commit, in batches,
by the readers of the feed (``Outbox.position_new``).

This measures the difference. T processes, each with its own connection, commit transactions of
one history row (one event) for ``--seconds`` each, while one more process positions the new
events every 10 ms, as a follower of the feed would; the figure is commits per second. Variants,
in a database this script recreates (``--pg``; by default on a PostgreSQL of its own, as
``bench/scale.py`` brings one), interleaved:

* ``as shipped``: the trigger as the migrations leave it;
* ``commit lock (0004)`` (a measurement only): the same trigger with 0004's advisory lock put back;
* ``no events`` (a measurement only): the trigger disabled, the history row alone.

    python bench/outbox_lock.py --processes 1 2 4 8 --seconds 3 --reps 2
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import procstat  # noqa: E402
import scale  # noqa: E402
from engine_bench import fresh_db  # noqa: E402

from persistence.migrate import upgrade  # noqa: E402
from persistence.outbox import Outbox  # noqa: E402
from persistence.schema import attempts, history  # noqa: E402

VARIANTS = ("as shipped", "commit lock (0004)", "no events")
_BEGIN = "BEGIN\n"
_LOCK = "BEGIN\n    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.events'));\n"


def trigger_function(conn: sa.Connection) -> str:
    """The definition of the trigger function migration 0004 created."""
    return str(conn.exec_driver_sql(
        "SELECT pg_get_functiondef('provision_history_event'::regproc)").scalar())


def set_variant(db: sa.Engine, shipped: str, variant: str) -> None:
    """Put the trigger in the state of ``variant`` (the shipped definition for "as shipped")."""
    with db.begin() as conn:
        if variant == "commit lock (0004)":
            if _BEGIN not in shipped or "pg_advisory_xact_lock" in shipped:
                raise RuntimeError("the trigger function is not the one this script knows how to lock")
            conn.exec_driver_sql(shipped.replace(_BEGIN, _LOCK, 1))
        else:
            conn.exec_driver_sql(shipped)
        action = "DISABLE" if variant == "no events" else "ENABLE"
        conn.exec_driver_sql(f"ALTER TABLE history {action} TRIGGER history_event")


def seed(db: sa.Engine, count: int) -> list[str]:
    """``count`` attempts (the history rows' foreign key), one per thread."""
    now = datetime.now(timezone.utc)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    rows = [dict(id=i, element_key="quickbooks", flow="oauth2", name=f"lock-{n}", tags=[],
                 state="PROVISIONED", version=1, history_seq=0, runs=0, created_at=now, updated_at=now,
                 failures=0, renewals=0) for n, i in enumerate(ids)]
    with db.begin() as conn:
        conn.execute(attempts.insert(), rows)
    return ids


def _committer(url: str, attempt_id: str, first_seq: int, ready: Any, go: Any, stop: Any,
               counts: Any, slot: int) -> None:
    """One committing process: one connection, one history row (one event) per transaction."""
    db = sa.create_engine(url, poolclass=sa.pool.NullPool)
    insert = history.insert()
    seq = first_seq
    with db.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        conn.commit()
        ready.release()
        go.wait()
        while not stop.is_set():
            with conn.begin():
                conn.execute(insert, dict(
                    attempt_id=attempt_id, seq=seq, trigger="renew", source="PROVISIONED",
                    dest="PROVISIONED", at=datetime.now(timezone.utc), duration_ms=1, worker="bench",
                    outcome="ok", tries=1, error=None, note=None))
            seq += 1
            counts[slot] += 1
    db.dispose()


def _positioner(url: str, ready: Any, go: Any, stop: Any) -> None:
    """Position new events every 10 ms while the committers run, as a follower of the feed would."""
    db = sa.create_engine(url, poolclass=sa.pool.NullPool)
    outbox = Outbox(db)
    outbox.position_new()
    ready.release()
    go.wait()
    while not stop.is_set():
        outbox.position_new()
        stop.wait(0.01)
    db.dispose()


def commits_per_s(url: str, attempt_ids: list[str], seconds: float, first_seq: int) -> tuple[float, int]:
    """Commits per second of len(attempt_ids) processes (one connection each: no client GIL shared
    between them), one history row per commit; and the next free history seq."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, stop = ctx.Semaphore(0), ctx.Event(), ctx.Event()
    counts = ctx.Array("q", len(attempt_ids), lock=False)
    procs = [ctx.Process(target=_committer, args=(url, a, first_seq, ready, go, stop, counts, n))
             for n, a in enumerate(attempt_ids)]
    procs.append(ctx.Process(target=_positioner, args=(url, ready, go, stop)))
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start = time.perf_counter()
    go.set()
    time.sleep(seconds)
    stop.set()
    for p in procs:
        p.join(60)
    elapsed = time.perf_counter() - start  # includes the last transactions after ``stop``
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a committing process failed: {[p.exitcode for p in procs]}")
    return sum(counts) / elapsed, first_seq + max(counts) + 1


def measure(url: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], str, str]:
    """Every cell, interleaved: commits/s per ``variant/processes``; the server version; its
    ``synchronous_commit``."""
    url = fresh_db(url, "outbox")
    db = sa.create_engine(url)
    upgrade(db)
    with db.connect() as conn:
        shipped = trigger_function(conn)
        version = str(conn.exec_driver_sql("SHOW server_version").scalar())
        commit = str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
    ids = seed(db, max(args.processes))
    rates: dict[str, list[float]] = {}
    seq = 1
    try:
        for _ in range(args.reps):
            for t in args.processes:
                for variant in VARIANTS:
                    set_variant(db, shipped, variant)
                    rate, seq = commits_per_s(url, ids[:t], args.seconds, seq)
                    rates.setdefault(f"{variant}/{t}", []).append(round(rate, 1))
                    print(f"  {t} processes, {variant}: {rate:,.0f} commits/s", flush=True)
    finally:
        set_variant(db, shipped, "as shipped")
        db.dispose()
    return rates, version, commit


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--pg", metavar="URL", help="a PostgreSQL URL; its database (default bench_scale) is "
                    "dropped and recreated. Default: a server of its own, as bench/scale.py brings")
    ap.add_argument("--pg-bin", metavar="DIR", help="server binaries for a PostgreSQL of our own")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8], help="committing processes")
    ap.add_argument("--seconds", type=float, default=3.0, help="per cell")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repeats (median)")
    args = ap.parse_args()
    with scale.postgres(args) as (url, _version):
        rates, version, commit = measure(url, args)
    machine = f"{procstat.machine_line()}; PostgreSQL {version}, synchronous_commit={commit}"
    print(f"\n{machine}; {args.seconds:g} s per cell, {args.reps} interleaved repeat(s), medians\n")
    head = " | ".join(f"{v} (commits/s)" for v in VARIANTS)
    print(f"| processes | {head} | commit lock / as shipped |")
    print("|---" * (len(VARIANTS) + 2) + "|")
    for t in args.processes:
        med = {v: statistics.median(rates[f"{v}/{t}"]) for v in VARIANTS}
        cells = " | ".join(f"{med[v]:,.0f}" for v in VARIANTS)
        print(f"| {t} | {cells} | {med['commit lock (0004)'] / med['as shipped']:.2f} |")
    print("RESULT " + json.dumps({"bench": "outbox_lock", "machine": machine, "seconds": args.seconds,
                                  "cores": os.cpu_count(), "rates": rates}), flush=True)


if __name__ == "__main__":
    main()

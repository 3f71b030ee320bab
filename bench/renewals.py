"""Renewals at the scale of a large customer base (issue 19): can W workers keep N connections fresh?

1. Loads N PROVISIONED engine-owned OAuth2 connections (hourly tokens) straight into the database
   (``bench/renewal_load.py``: COPY on PostgreSQL, secrets sealed with the engine's codec), due over
   ``--spread-s`` seconds (default one hour: a million connections on hourly tokens).
2. Runs a fake provider + platform (``bench/fake_api.py``, several processes on one port) and W
   worker processes (``bench/worker.py``, the ``provision worker`` loop). Each renewal is the real
   PROVISIONED step twice: the refresh-token grant (committed at once with its history row), then the
   push of the rotated tokens to the instance (PATCH /instances/{id}).
3. Reports renewals/s, the lateness of each connection's first renewal against its due time (p50,
   p99, max; the engine renews 6 minutes early for hourly tokens, so lateness under that lead means
   no token expired), CPU per renewal (workers, PostgreSQL, fake), worker RSS at the start and end,
   and the history's growth per day of renewals with and without retention (a sample of attempts
   with ``--sample-days`` days of hourly rows, measured, then pruned and measured again).

PostgreSQL: ``--pg URL`` (that database is dropped and recreated), else a server of its own from the
``bench`` extra (``bench/pg_local.py``). ``--sqlite``: the embedded default, 10,000 connections.

    python bench/renewals.py                                 # 1,000,000 connections, 4 workers, 1 hour
    python bench/renewals.py -n 2000 --workers 2 --spread-s 5 --sample-attempts 200
    python bench/renewals.py --sqlite --workers 1

Prints a Markdown table and a ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import children  # noqa: E402
import fake_api  # noqa: E402
import pg_local  # noqa: E402
import procstat  # noqa: E402
import renewal_load  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from engine.clock import utcnow  # noqa: E402
from engine.wiring import open_repository  # noqa: E402
from persistence.database import AUTOCOMMIT_OPTIONS  # noqa: E402
from persistence.retention import HistoryPruner, retention_cutoff  # noqa: E402
from persistence.schema import attempts, history  # noqa: E402
from states.schedule import renewal_lead_s  # noqa: E402


@contextmanager
def database(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, Callable[[], list[int]], str]]:
    """(URL of an empty database, the PostgreSQL pids to account CPU to, the server version)."""
    if args.sqlite:
        yield f"sqlite:///{tmp}/renewals.db", lambda: [], "SQLite " + __import__("sqlite3").sqlite_version
        return
    with ExitStack() as stack:
        if args.pg:
            given = sa.make_url(args.pg)
            url = given.set(database=given.database or "bench_renewals").render_as_string(hide_password=False)
            pids = lambda: procstat.pids_named("postgres")  # noqa: E731 - the whole machine's: see the table
        else:
            server = stack.enter_context(pg_local.local_postgres(args.pg_bin))
            url, pids = server.url("bench_renewals"), server.pids
        admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        name = sa.make_url(url).database
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            version = str(conn.exec_driver_sql("SHOW server_version").scalar())
            # A server with autovacuum off keeps every renewal's dead row version: the table and
            # its indexes grow, and claims slow down with them (README, the million-connection runs).
            version += f", autovacuum {conn.exec_driver_sql('SHOW autovacuum').scalar()}"
        admin.dispose()
        yield url, pids, f"PostgreSQL {version}"


def history_bytes(conn: sa.Connection) -> int:
    """The history table and the events outbox (a row per history row), with their indexes, in bytes."""
    if conn.dialect.name == "postgresql":
        return int(conn.exec_driver_sql(
            "SELECT pg_total_relation_size('history') + pg_total_relation_size('events')").scalar() or 0)
    return int(conn.exec_driver_sql(
        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
        "(SELECT name FROM sqlite_master WHERE tbl_name IN ('history', 'events'))").scalar() or 0)


def retention_sizes(db_url: str, tmp: Path, attempts_n: int, days: int, keys: str) -> dict[str, float]:
    """Bytes of history and events per connection and day, with all rows kept and after retention
    folded them (the events of folded rows go with them; a summary has none)."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp}/retention_sample.db"
    else:
        with sa.create_engine(db_url).begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS bench_retention CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA bench_retention")
        url = sa.make_url(db_url).update_query_dict({"options": "-csearch_path=bench_retention"}) \
            .render_as_string(hide_password=False)
    engine = open_repository(url, migrate=True, environ={"PROVISION_SECRET_KEY": keys}).engine
    today = retention_cutoff(utcnow(), timedelta(0))
    try:
        renewal_load.history_sample(engine, attempts_n, days, today)
        compact = "VACUUM FULL ANALYZE history, events" if engine.dialect.name == "postgresql" else "VACUUM"
        autocommit = {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" \
            else AUTOCOMMIT_OPTIONS  # VACUUM runs outside a transaction
        with engine.connect().execution_options(**autocommit) as conn:
            conn.exec_driver_sql(compact)
            kept = history_bytes(conn)
            report = HistoryPruner(engine).prune(today)  # every sample day is older than today
            conn.exec_driver_sql(compact)
            pruned = history_bytes(conn)
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("DROP SCHEMA bench_retention CASCADE")
    finally:
        engine.dispose()
    per = attempts_n * days
    return {"kept_bytes_per_connection_day": kept / per, "pruned_bytes_per_connection_day": pruned / per,
            "sample_rows": report.renewal_rows, "sample_summaries": report.summaries}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(args: argparse.Namespace, db_url: str, pg_pids: Callable[[], list[int]], api: str,
        fake_pids: list[int], keys: str) -> dict[str, Any]:
    """Load, arm, run the workers until every connection renewed (or the grace ends), measure."""
    engine = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": keys}).engine
    t_load = time.perf_counter()
    renewal_load.load(engine, args.n, args.spread_s, keys, utcnow(), processes=args.load_processes)
    load_s = time.perf_counter() - t_load
    with engine.connect() as conn:
        size_before = history_bytes(conn)
    t0 = utcnow() + timedelta(seconds=args.start_delay_s)
    renewal_load.arm(engine, t0)  # before the workers start, so none sleeps past t0
    env = {**os.environ, "PROVISION_SECRET_KEY": keys}
    command = [sys.executable, str(BENCH / "worker.py"), db_url, api + fake_api.BASE_PATH,
               "--concurrency", str(args.concurrency)]
    workers = [subprocess.Popen(command, env=env) for _ in range(args.workers)]
    try:
        time.sleep(max(0.0, (t0 - utcnow()).total_seconds()))
        wpids = [w.pid for w in workers]
        late_start = (utcnow() - t0).total_seconds()
        if late_start > 1.0:  # arming a large table outlasted --start-delay-s: lateness includes it
            print(f"  the workers started {late_start:.1f} s after the first due time "
                  "(raise --start-delay-s)", flush=True)
        # RSS "at the start" is taken once the workers have renewed something: a process that is still
        # importing its modules would report a few MiB and make any growth look large.
        rss_start: list[float] | None = None
        cpu0 = (procstat.total_cpu(wpids), procstat.total_cpu(pg_pids()), procstat.total_cpu(fake_pids))
        deadline = t0 + timedelta(seconds=args.spread_s + args.grace_s)
        rss_max, last_print, renewed, backlog = [0.0] * len(wpids), 0.0, 0, args.n
        while utcnow() < deadline:
            time.sleep(args.poll_s)
            with engine.connect() as conn:
                renewed = conn.execute(sa.select(sa.func.count()).where(attempts.c.renewals > 0)).scalar_one()
                backlog = conn.execute(sa.select(sa.func.count()).where(attempts.c.next_run_at <= utcnow())
                                       ).scalar_one()
            rss_now = [procstat.rss_mib(p) or 0.0 for p in wpids]
            if rss_start is None and renewed > 0:
                rss_start = rss_now
            rss_max = [max(a, b) for a, b in zip(rss_max, rss_now, strict=True)]
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                print(f"  {(utcnow() - t0).total_seconds():7.0f} s: {renewed:,} of {args.n:,} renewed, "
                      f"{backlog:,} due now", flush=True)
            if renewed >= args.n and backlog == 0:
                break
        wall = (utcnow() - t0).total_seconds()
        rss_end = [procstat.rss_mib(p) or 0.0 for p in wpids]
        cpu = (procstat.total_cpu(wpids) - cpu0[0], procstat.total_cpu(pg_pids()) - cpu0[1],
               procstat.total_cpu(fake_pids) - cpu0[2])
    finally:
        children.stop(workers, 60, what="worker")
    pairs = renewal_load.first_renewals(engine)
    late = [(at - due).total_seconds() for due, at in pairs if at is not None]
    renew = history.c.trigger == "renew"
    with engine.connect() as conn:
        renewals = conn.execute(sa.select(sa.func.count()).where(renew)).scalar_one()
        # The end of the last renewal: its push (a Stay, no history row) sets updated_at.
        last_at = conn.execute(sa.select(sa.func.max(attempts.c.updated_at)).where(attempts.c.renewals > 0)
                               ).scalar() or t0
        size_after = history_bytes(conn)
    engine.dispose()
    span = max((last_at - t0).total_seconds(), 1e-9)
    per = max(renewals, 1)
    return {
        "n": args.n, "workers": args.workers, "spread_s": args.spread_s, "load_s": round(load_s, 1),
        "wall_s": round(wall, 1), "renewals": renewals, "missed": sum(1 for _, at in pairs if at is None),
        "offered_per_s": round(args.n / args.spread_s, 1) if args.spread_s else None,
        "renewals_per_s": round(renewals / span, 1),
        "lateness_s": {"p50": round(percentile(late, 0.5), 3), "p99": round(percentile(late, 0.99), 3),
                       "max": round(max(late), 3)} if late else None,
        "lead_s": renewal_lead_s(renewal_load.INTERVAL_S),
        "cpu_ms_per_renewal": {kind: round(seconds * 1000 / per, 3)
                               for kind, seconds in zip(("workers", "postgres", "fake"), cpu, strict=True)},
        "started_late_s": round(max(late_start, 0.0), 1),
        "worker_rss_mib": {"start": round(statistics.mean(rss_start or rss_end), 1),
                           "end": round(statistics.mean(rss_end), 1), "max": round(max(rss_max), 1)},
        "history_bytes_per_renewal": round((size_after - size_before) / per, 1),
    }


def table(res: dict[str, Any], sizes: dict[str, float], machine: str, db: str, external_pg: bool) -> str:
    """The Markdown report."""
    late, cpu, rss = res["lateness_s"] or {}, res["cpu_ms_per_renewal"], res["worker_rss_mib"]
    pg_cpu = "- (SQLite runs inside the workers)" if db.startswith("SQLite") else str(cpu["postgres"])
    if external_pg:
        pg_cpu += " (every postgres process on the machine)"
    day = res["n"] * 24  # renewals a day with hourly tokens
    rows = [
        ("connections, workers", f"{res['n']:,}, {res['workers']}"),
        ("due over", f"{res['spread_s']:,} s (offered {res['offered_per_s']:,} /s)" if res["offered_per_s"]
         else "all due at once (capacity)"),
        ("renewals (refresh grant + push)",
         f"{res['renewals']:,} ({res['missed']:,} connections never renewed)"),
        ("renewals/s", f"{res['renewals_per_s']:,}"),
        ("lateness p50 / p99 / max", f"{late.get('p50')} / {late.get('p99')} / {late.get('max')} s "
                                     f"(lead {res['lead_s']:.0f} s)"),
        ("CPU per renewal: workers / PostgreSQL / fake", f"{cpu['workers']} / {pg_cpu} / {cpu['fake']} ms"),
        ("worker RSS start / end / max", f"{rss['start']} / {rss['end']} / {rss['max']} MiB"),
        ("history bytes per renewal (in the run)", f"{res['history_bytes_per_renewal']:,.0f}"),
        ("history and events growth per day, all rows kept",
         f"{sizes['kept_bytes_per_connection_day'] * res['n'] / 2**20:,.1f} MiB ({day:,} rows)"),
        ("history and events growth per day beyond the retention window",
         f"{sizes['pruned_bytes_per_connection_day'] * res['n'] / 2**20:,.1f} MiB "
         f"({res['n']:,} summary rows)"),
        ("load (not timed above)", f"{res['load_s']} s"),
    ]
    head = f"Renewals, {db}; {machine}\n\n| measure | value |\n|---|---|\n"
    return head + "\n".join(f"| {k} | {v} |" for k, v in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, help="connections (default 1,000,000; 10,000 with --sqlite)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    ap.add_argument("--concurrency", type=int, default=1, help="steps in flight per worker")
    ap.add_argument("--spread-s", type=float, default=3600.0,
                    help="due times spread over this many seconds (0: all due at once)")
    ap.add_argument("--grace-s", type=float, default=300.0, help="how long after the last due time to wait")
    ap.add_argument("--start-delay-s", type=float, default=5.0, help="first due time after loading")
    ap.add_argument("--poll-s", type=float, default=2.0, help="progress query interval")
    ap.add_argument("--pg", metavar="URL",
                    help="a PostgreSQL URL; its database (default bench_renewals) is dropped and recreated")
    ap.add_argument("--pg-bin", metavar="DIR", help="server binaries for a PostgreSQL of our own")
    ap.add_argument("--sqlite", action="store_true", help="the embedded default: a SQLite file")
    ap.add_argument("--fake-processes", type=int, default=2, help="fake provider processes (SO_REUSEPORT)")
    ap.add_argument("--load-processes", type=int, default=os.cpu_count() or 1,
                    help="processes sealing secrets while loading")
    ap.add_argument("--sample-attempts", type=int, default=5000, help="retention size probe: attempts")
    ap.add_argument("--sample-days", type=int, default=2, help="retention size probe: days of hourly rows")
    args = ap.parse_args()
    args.n = args.n or (10_000 if args.sqlite else 1_000_000)
    keys = Fernet.generate_key().decode()
    port = pg_local.free_port()
    fake_pids = fake_api.serve(port, args.fake_processes)  # forked before any thread or connection
    try:
        fake_api.wait_ready(port)
        with tempfile.TemporaryDirectory(prefix="bench-renewals-") as tmp, \
                database(args, Path(tmp)) as (db_url, pg_pids, version):
            res = run(args, db_url, pg_pids, f"http://127.0.0.1:{port}", fake_pids, keys)
            # Printed before the retention probe, so that a failure there cannot lose an hour's run.
            print("RUN " + json.dumps(res), flush=True)
            sample = min(args.sample_attempts, args.n)
            sizes = retention_sizes(db_url, Path(tmp), sample, args.sample_days, keys)
    finally:
        for pid in fake_pids:
            os.kill(pid, signal.SIGTERM)
    machine = f"{procstat.machine_line()}, load average {os.getloadavg()[0]:.1f}"
    print(table(res, sizes, machine, version, bool(args.pg)))
    print("RESULT " + json.dumps({"bench": "renewals", "db": version, "machine": machine, **res, **sizes}),
          flush=True)


if __name__ == "__main__":
    main()

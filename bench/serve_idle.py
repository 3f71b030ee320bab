"""CPU per callback of one ``provision serve`` process while M idle keep-alive connections stay open.

A browser keeps its connection to the receiver open after the last page (the progress page, which
refreshes itself until the attempt is PROVISIONED or FAILED) until the server's idle timeout closes
it (``PROVISION_SERVE_IDLE_TIMEOUT_SECONDS``, 30 s by default). A receiver exposed to browsers
directly therefore holds about (callbacks per second) x (seconds on the progress page + the idle
timeout) idle connections. This script measures what they cost the requests that do come in:

* it starts N x len(--idle) x --reps attempts on a fresh database and drives them to REDIRECTED
  against a fake platform (``bench/fake_api.py``), in this process;
* it starts one real ``provision serve`` on that database, with the idle timeout and connection
  limit raised above the run's length and the largest M;
* for each M (interleaved, ``--reps`` times) it opens M connections that each made one request
  (``/healthz``) and then stay silent, as browsers that have seen their last page, and sends N
  real callbacks, one after another on one kept-alive connection (``--in-flight K``: from K
  clients at once, each on its own connection); it reads the receiver process's
  CPU (``/proc``) before and after and prints ms of CPU per callback, with the ratio to M = 0,
  and the callbacks per second the clients saw;
* with ``--fresh``, one more cell sends each callback on a new connection that asks to be closed,
  as a reverse proxy without a pool of upstream connections does (nginx without ``keepalive``).

Every callback must be applied (a 303 to the progress page), else the run stops.

    python bench/serve_idle.py [-n 1000] [--idle 0 100 300 1000] [--reps 2] [--fresh] [--in-flight K]
                               [--pg URL]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fake_api  # noqa: E402
import http_callbacks  # noqa: E402
import http_load  # noqa: E402
import pg_local  # noqa: E402
import procstat  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from engine_bench import START, fresh_db, make_engine  # noqa: E402

from states.model import State  # noqa: E402

CHUNK = 500
WARMUP = 20  # callbacks sent before the first cell, not counted
LABELS = {"fresh": "none, a new connection per callback"}


def redirected_callbacks(db_url: str, api: str, count: int) -> list[str]:
    """``count`` attempts driven to REDIRECTED; the provider redirect of each, as a path and query."""
    engine = make_engine(db_url, api, batch_size=CHUNK)
    try:
        items = [{"name": f"idle-{i}", **START} for i in range(count)]
        for first in range(0, count, CHUNK):
            engine.start_many(items[first:first + CHUNK])
        engine.run_until_idle()
        waiting = engine.list(State.REDIRECTED, limit=count)
        if len(waiting) != count:
            raise RuntimeError(f"{len(waiting)} of {count} attempts reached REDIRECTED: {engine.counts()}")
        paths = []
        for attempt in waiting:
            parts = urlsplit(http_callbacks.provider_redirect(engine.redirect_url(attempt) or ""))
            paths.append(f"/callback?{parts.query}")
        return paths
    finally:
        engine.close()


def cpu_ms_per_callback(receivers: http_callbacks.Receivers, host: str, port: int,
                        paths: list[str], *, fresh: bool = False, in_flight: int = 1) -> tuple[float, float]:
    """The receiver's CPU per callback, and callbacks per second, while ``in_flight`` clients
    each send their share of ``paths`` (``http_load.spread``); every callback must be applied."""
    before = receivers.cpu_seconds()
    seconds = http_load.spread(host, port, paths, fresh=fresh, in_flight=in_flight)
    return float(receivers.cpu_seconds() - before) * 1000 / len(paths), len(paths) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="callbacks per cell")
    ap.add_argument("--idle", type=int, nargs="+", default=[0, 100, 300, 1000],
                    help="idle keep-alive connections held open, one cell each")
    ap.add_argument("--reps", type=int, default=2, help="interleaved runs of every cell")
    ap.add_argument("--pg", help="PostgreSQL URL of a database to recreate (default: a SQLite file)")
    ap.add_argument("--fresh", action="store_true",
                    help="add a cell: no idle connections, a new connection for every callback")
    ap.add_argument("--in-flight", type=int, default=1,
                    help="clients sending callbacks at once, each on its own kept-alive connection "
                         "(1: one after another, each waking the server's loop on its own)")
    ap.add_argument("--threads", type=int, default=8, help="PROVISION_SERVE_THREADS of the receiver")
    args = ap.parse_args()
    os.environ.setdefault("PROVISION_SECRET_KEY", Fernet.generate_key().decode())
    api_port = pg_local.free_port()
    pids = fake_api.serve(api_port, 1)
    receivers = None
    try:
        fake_api.wait_ready(api_port)
        db_url = fresh_db(args.pg, "idle")
        one_run: list[int | str] = [*args.idle, *(["fresh"] if args.fresh else [])]
        cells = one_run * args.reps
        paths = redirected_callbacks(db_url, f"http://127.0.0.1:{api_port}", args.n * len(cells) + WARMUP)
        env = {**os.environ, "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS": "3600",
               "PROVISION_SERVE_CONNECTION_LIMIT": str(max(args.idle) + 100),
               "PROVISION_SERVE_THREADS": str(args.threads)}
        receivers = http_callbacks.Receivers(1, db_url, env)
        url = urlsplit(receivers.urls[0])
        host, port = url.hostname or "127.0.0.1", url.port or 80
        cpu_ms_per_callback(receivers, host, port, paths[:WARMUP])
        taken = WARMUP
        print(f"n={args.n} per cell, {args.in_flight} in flight, {args.reps} interleaved runs; "
              f"{procstat.machine_line()}; database "
              f"{'postgresql' if args.pg else 'sqlite'}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
        runs: dict[int | str, list[float]] = {m: [] for m in cells}
        rates: dict[int | str, list[float]] = {m: [] for m in cells}
        for m in cells:
            held = http_load.hold_idle(host, port, m if isinstance(m, int) else 0)
            try:
                batch = paths[taken:taken + args.n]
                ms, rate = cpu_ms_per_callback(receivers, host, port, batch, fresh=m == "fresh",
                                               in_flight=args.in_flight)
            finally:
                for sock in held:
                    sock.close()
            taken += args.n
            runs[m].append(ms)
            rates[m].append(rate)
            print(f"  {LABELS.get(m, m)}: {ms:.3f} ms CPU per callback, {rate:.0f} callbacks/s", flush=True)
        base = statistics.median(runs[args.idle[0]])
        print("| idle keep-alive connections | receiver CPU per callback (ms, median) | runs | "
              f"x {args.idle[0]} idle | callbacks/s (median) |")
        print("|---|---|---|---|---|")
        for m, values in runs.items():
            med = statistics.median(values)
            label = f"{m:,}" if isinstance(m, int) else LABELS[m]
            print(f"| {label} | {med:.3f} | {', '.join(f'{x:.3f}' for x in values)} | {med / base:.2f} | "
                  f"{statistics.median(rates[m]):.0f} |")
        print("RESULT " + json.dumps({"bench": "serve_idle", "db": "postgresql" if args.pg else "sqlite",
                                      "n": args.n, "in_flight": args.in_flight,
                                      "threads": args.threads, "runs": {str(m): v for m, v in runs.items()},
                                      "callbacks_per_s": {str(m): v for m, v in rates.items()}}))
    finally:
        if receivers is not None:
            receivers.stop()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()

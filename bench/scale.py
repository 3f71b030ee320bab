"""How far the engine scales on one PostgreSQL: attempts/s end to end for W = 1, 2, 4, 8, 12 workers.

Brings everything it needs, so that the table can be reproduced on any machine with Python:

* PostgreSQL: ``--pg URL`` (a server; its database ``bench_scale`` is dropped and recreated), else a
  server of its own from the ``pgserver`` wheel (``pip install -e '.[bench]'``, or ``--pg-bin DIR``),
  initialised in a temporary folder as an unprivileged user (``bench/pg_local.py``);
* the fake platform as ``--fake-processes`` processes on one port (``SO_REUSEPORT``,
  ``bench/fake_api.py``), so that it is never the bottleneck;
* one ``bench/engine_bench.py --workers W`` run per cell: a driver process starts N attempts with
  ``Engine.start_many`` and delivers their callbacks while W worker processes run the steps
  (``--callbacks free``: the callbacks as one bulk transaction per poll, to show what the workers
  alone reach when the single driver is not the limit; ``--callbacks http``: the driver follows
  the event feed and hands each consent URL to one of ``--browsers`` processes, which send the
  provider's redirect as an HTTP GET to one of ``--receivers`` ``provision serve`` processes; the
  receivers' CPU per callback and the browsers' per attempt are in the RESULT line).

Every run also samples what PostgreSQL's busy backends wait for (``bench/pg_waits.py``): on CPU,
a commit's WAL flush, the events outbox's commit lock... One line per run says it, and the RESULT
line keeps the shares (``pg_waits``): when the lock and the flush dominate, more cores would not help.

The cells run ``--reps`` times, interleaved (every W once, then again), and the table gives medians
and the ratio to one worker, with the machine line (cores, CPU, PostgreSQL version). With fewer
cores than the largest W it still runs, and says what that means for the figures.

    python bench/scale.py                                   # N=4,000, W = 1 2 4 8 12, 2 repeats
    python bench/scale.py -n 200 --workers 1 2 --reps 1 --callbacks engine   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fake_api  # noqa: E402
import http_callbacks  # noqa: E402
import pg_local  # noqa: E402
import pg_waits  # noqa: E402
import procstat  # noqa: E402
import sqlalchemy as sa  # noqa: E402

COLUMNS = {"engine": "attempts/s (product path)", "free": "attempts/s (callbacks free)",
           "http": "attempts/s (callbacks over HTTP)"}


@contextmanager
def postgres(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(URL of the database the runs use, the server's version)."""
    if args.pg:
        given = sa.make_url(args.pg)
        url = given.set(database=given.database or "bench_scale").render_as_string(hide_password=False)
        yield url, server_version(url)
        return
    with pg_local.local_postgres(args.pg_bin) as server:
        url = server.url("bench_scale")
        yield url, server_version(url)


def server_version(url: str) -> str:
    """``SHOW server_version`` of the server behind ``url`` (through its ``postgres`` database)."""
    engine = sa.create_engine(sa.make_url(url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def one_run(args: argparse.Namespace, api: str, db_url: str, workers: int, callbacks: str) -> dict[str, Any]:
    """The RESULT of one ``engine_bench.py`` run (``attempts_per_s``, CPU per attempt...)."""
    cmd = [sys.executable, str(BENCH / "engine_bench.py"), "-n", str(args.n), "--workers", str(workers),
           "--callbacks", callbacks, "--receivers", str(args.receivers), "--browsers", str(args.browsers),
           "--browser-threads", str(args.browser_threads),
           "--api", api, "--pg", db_url]
    # What the database's backends wait for meanwhile (bench/pg_waits.py): the start-up and the
    # warm-up are sampled too, but they are short against N attempts.
    with pg_waits.sampling(db_url) as waits:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout_s)
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        tail = (done.stderr or done.stdout)[-1500:]
        raise RuntimeError(f"engine_bench.py failed ({done.returncode}): {tail}")
    return {**json.loads(results[-1]), "pg_waits": waits.summary()}


def waits_line(result: dict[str, Any]) -> str:
    """One run's database waits in a few words: busy backends and the largest shares."""
    waits = result["pg_waits"]
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(waits["shares"].items())[:4])
    return f"PostgreSQL: {waits['busy_backends']} busy backends; {shares}"


def caveat(cores: int, largest: int) -> str | None:
    """What the figures mean when the machine has fewer cores than the runs have processes."""
    if cores >= largest + 4:
        return None
    return (f"Caveat: this machine has {cores} cores. Each run also has a driver process, PostgreSQL and "
            f"the fake API, so runs with more than {max(1, cores - 2)} worker(s) share cores: their "
            "figures show contention on this machine, not how the engine scales. Measure on a machine "
            f"with at least {largest + 4} cores for the full table.")


def render(rates: dict[tuple[str, int], list[float]], args: argparse.Namespace, machine: str) -> str:
    """The Markdown scaling table: medians, runs, ratio to one worker, per callback mode."""
    head = ["workers"]
    for mode in args.callbacks:
        head += [COLUMNS[mode], "runs", "x one worker"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in args.workers:
        cells = [str(w)]
        for mode in args.callbacks:
            median = statistics.median(rates[mode, w])
            one = statistics.median(rates[mode, 1]) if (mode, 1) in rates else None
            cells += [f"{median:,.0f}", ", ".join(f"{r:,.0f}" for r in rates[mode, w]),
                      f"{median / one:.2f}" if one else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return f"{machine}\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=4000, help="attempts per run (default 4,000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 12], help="worker counts")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repeats per cell (median)")
    ap.add_argument("--callbacks", nargs="+", choices=tuple(COLUMNS), default=list(COLUMNS),
                    help="engine: Engine.handle_callback per attempt; free: one bulk transaction per poll")
    ap.add_argument("--pg", metavar="URL",
                    help="a PostgreSQL URL; its database (default bench_scale) is dropped and recreated")
    ap.add_argument("--pg-bin", metavar="DIR", help="server binaries for a PostgreSQL of our own")
    ap.add_argument("--receivers", type=int, default=2, help="--callbacks http: provision serve processes")
    ap.add_argument("--browsers", type=int, default=http_callbacks.DEFAULT_BROWSERS,
                    help="--callbacks http: processes sending the users' GETs (bench/http_callbacks.py)")
    ap.add_argument("--browser-threads", type=int, default=http_callbacks.DEFAULT_BROWSER_THREADS,
                    help="--callbacks http: GETs in flight per browser process (default 16)")
    ap.add_argument("--fake-processes", type=int, default=max(2, min(6, (os.cpu_count() or 2) // 2)))
    ap.add_argument("--run-timeout-s", type=float, default=1800.0)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    note = caveat(cores, max(args.workers))
    if note:
        print(note, flush=True)
    port = pg_local.free_port()
    fake_pids = fake_api.serve(port, args.fake_processes)  # forked before any thread or connection
    rates: dict[tuple[str, int], list[float]] = {}
    raw: list[dict[str, Any]] = []  # every run's RESULT, CPU figures included
    try:
        fake_api.wait_ready(port)
        with postgres(args) as (db_url, version):
            for rep in range(args.reps):
                for mode in args.callbacks:
                    for w in args.workers:
                        result = one_run(args, f"http://127.0.0.1:{port}", db_url, w, mode)
                        rates.setdefault((mode, w), []).append(float(result["attempts_per_s"]))
                        raw.append(result)
                        # The driver's CPU per attempt says whether the one driver was the limit; how busy
                        # the machine was, whether its cores were (near 100%: more workers cannot help).
                        print(f"  repeat {rep + 1}, {w} workers, callbacks {mode}: "
                              f"{result['attempts_per_s']:,.1f} attempts/s (ms CPU per attempt: driver "
                              f"{result['driver_cpu_ms_per_attempt']}, workers "
                              f"{result['worker_cpu_ms_per_attempt']}; machine "
                              f"{100 * result['machine_busy']:.0f}% busy)", flush=True)
                        print(f"    {waits_line(result)}", flush=True)
    finally:
        for pid in fake_pids:
            os.kill(pid, signal.SIGTERM)
    machine = (f"{procstat.machine_line()}; PostgreSQL {version}; N={args.n:,} attempts per run, "
               f"{args.reps} interleaved repeat(s), medians; fake API as {args.fake_processes} processes")
    if "http" in args.callbacks:
        threads = os.environ.get("PROVISION_SERVE_THREADS")  # the receivers inherit it
        machine += (f"; callbacks over HTTP: {args.receivers} receivers "
                    f"({'PROVISION_SERVE_THREADS=' + threads if threads else 'default request threads'}), "
                    f"{args.browsers} browser processes x {args.browser_threads} threads")
    print(render(rates, args, machine))
    if note:
        print(f"\n{note}")
    print("RESULT " + json.dumps({"bench": "scale", "machine": machine, "caveat": note, "n": args.n,
                                  "rates": {f"{m}/{w}": r for (m, w), r in rates.items()}, "runs": raw}),
          flush=True)


if __name__ == "__main__":
    main()

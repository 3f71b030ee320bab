"""CPU per applied callback and per started attempt, in-process (issue 19 must-have 1).

    python bench/callback_cost.py -n 2000 [--pg URL] [--profile callbacks|starts]

For each database (SQLite always; PostgreSQL with ``--pg``, a database this script recreates):
``Engine.start_many`` starts N attempts in chunks (CPU per attempt), the engine drives them to
REDIRECTED against the fake API (``bench/fake_api.py``, forked on a free port), and then
``Engine.handle_callback`` applies one provider redirect per attempt: ``time.process_time()``
over the N callbacks is this process's CPU (parse, guard statement, encryption, inbox row, and the
database driver's side of the round trip; the database server's CPU is not counted). Every
callback must come back ``applied``. ``--profile`` prints the cProfile top 25 of that phase.
The machine is shared: compare figures from one run (ratios), not across runs.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fake_api  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from engine_bench import START, fresh_db, make_engine, provider_redirect  # noqa: E402

from states.model import State  # noqa: E402

CHUNK = 500  # start_many items per call (one transaction each)


@contextmanager
def profiled(on: bool) -> Iterator[None]:
    """cProfile the block when ``on``; print its top 25 by cumulative time."""
    if not on:
        yield
        return
    prof = cProfile.Profile(time.process_time)  # CPU, as the figures are; not wall time
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(os.environ.get("COST_SORT", "cumulative")).print_stats(25)
        print(out.getvalue())


def cpu_ms_per(count: int, work: Callable[[], None]) -> float:
    """Milliseconds of this process's CPU per item for ``work`` over ``count`` items."""
    c0 = time.process_time()
    work()
    return (time.process_time() - c0) * 1000 / count


def measure(db_url: str, api: str, n: int, profile: str | None) -> tuple[float, float]:
    """(ms CPU per attempt of start_many, ms CPU per applied callback) on ``db_url``."""
    engine = make_engine(db_url, api, batch_size=CHUNK)
    try:
        def start() -> None:
            for first in range(0, n, CHUNK):
                last = min(first + CHUNK, n)
                engine.start_many([{"name": f"cost-{i}", **START} for i in range(first, last)])

        with profiled(profile == "starts"):
            per_start = cpu_ms_per(n, start)
        engine.run_until_idle()  # NEW -> TOKEN_ISSUED -> REDIRECTED
        waiting = engine.list(State.REDIRECTED, limit=n)
        assert len(waiting) == n, engine.counts()
        urls = [provider_redirect(engine.redirect_url(a) or "") for a in waiting]

        def apply() -> None:
            for url in urls:
                outcome = engine.handle_callback(url)
                assert outcome.status == "applied", outcome

        with profiled(profile == "callbacks"):
            per_callback = cpu_ms_per(n, apply)
        assert engine.counts().get(State.CALLBACK_RECEIVED.value, 0) == n, engine.counts()
        return per_start, per_callback
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="attempts and callbacks per database")
    ap.add_argument("--pg", help="PostgreSQL URL of a database to recreate (default: SQLite only)")
    ap.add_argument("--pg-only", action="store_true", help="with --pg: skip SQLite")
    ap.add_argument("--profile", choices=("callbacks", "starts"), help="print a cProfile of that phase")
    args = ap.parse_args()
    os.environ.setdefault("PROVISION_SECRET_KEY", Fernet.generate_key().decode())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pids = fake_api.serve(port, 1)
    try:
        fake_api.wait_ready(port)
        api = f"http://127.0.0.1:{port}"
        print(f"n={args.n}, {os.cpu_count()} cores (shared machine: compare ratios within one run)")
        print("database    start_many ms CPU/attempt    handle_callback ms CPU/callback")
        targets = [("sqlite", fresh_db(None, "cost"))] if not args.pg_only else []
        targets += [("postgresql", fresh_db(args.pg, "cost"))] if args.pg else []
        for name, url in targets:
            per_start, per_callback = measure(url, api, args.n, args.profile)
            print(f"{name:<11} {per_start:>25.3f}    {per_callback:>31.3f}", flush=True)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()

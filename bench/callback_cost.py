"""CPU per applied callback and per started attempt, in-process, part by part (issue 19 must-have 1).

    python bench/callback_cost.py -n 2000 [--pg URL] [--profile callbacks|wsgi|starts|start]
    python bench/callback_cost.py -n 1000 --pg URL --before /tmp/before --reps 5   # before/after

For each database (SQLite always; PostgreSQL with ``--pg``, a database this script recreates):
``Engine.start_many`` starts 2N attempts in chunks (CPU per attempt), the engine drives them to
REDIRECTED against the fake API (``bench/fake_api.py``, forked on a free port), then N provider
redirects are applied with ``Engine.handle_callback`` and N through the receiver's WSGI app
(``engine.web.callback_app``, called in-process: request parsing, routing, the engine, the 303 to
the progress page; the HTTP server's own work is not included). Every callback must be
``applied``. ``time.process_time()`` is this process's CPU, including the SQLite library's work
and the database driver's side of a round trip, but not a PostgreSQL server's CPU.

The parts (parsing, hashes, sealing, input validation) are each timed alone over the same inputs
in the same process; "database and the rest" is the phase's CPU minus those. ``--before DIR``
runs this script alternately on another checkout's code (``git worktree add /tmp/before <commit>``;
the runs import it with ``--code DIR``) and on this one, ``--reps`` times each, and prints the
medians side by side. The machine may be shared: only
figures of one run (and ratios) compare; CPU time is less noisy than wall time, not noise-free.
Last, N more attempts are started with ``Engine.start``, one call each ("Engine.start one call
at a time"), as an application starting one customer's connection does. ``--profile`` prints
the cProfile top 25 (CPU time) of one phase (``starts``: start_many; ``start``: one call each).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def code_root() -> Path:
    """The checkout whose code is measured: this one, or ``--code DIR`` (read before the imports)."""
    if "--code" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--code") + 1]).resolve()
    return Path(__file__).resolve().parent.parent


ROOT = code_root()
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import fake_api  # noqa: E402
import pg_local  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from engine_bench import START, fresh_db, make_engine, provider_redirect  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from engine.core.callbacks import _canonical, parse_callback  # noqa: E402
from engine.core.starts import new_attempt, validate_items  # noqa: E402
from engine.security.crypto import digest  # noqa: E402
from engine.web.callback_app import make_app  # noqa: E402
from states.model import State  # noqa: E402

if not Path(parse_callback.__code__.co_filename).resolve().is_relative_to(ROOT):
    raise SystemExit(f"the project was imported from {parse_callback.__code__.co_filename}, not {ROOT}")

CHUNK = 500  # start_many items per call (one transaction each)


@contextmanager
def profiled(on: bool) -> Iterator[None]:
    """cProfile the block when ``on``; print its top 25 by cumulative time (``COST_SORT`` to change)."""
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


def cpu_ms_per(count: int, work: Callable[[], object]) -> float:
    """Milliseconds of this process's CPU per item for ``work`` over ``count`` items."""
    c0 = time.process_time()
    work()
    return (time.process_time() - c0) * 1000 / count


def each_ms(items: Sequence[Any], fn: Callable[[Any], object], repeat: int = 3) -> float:
    """CPU ms per item of ``fn`` over ``items``, the median of ``repeat`` passes (a part timed alone)."""
    passes = []
    for _ in range(repeat):
        c0 = time.process_time()
        for item in items:
            fn(item)
        passes.append(time.process_time() - c0)
    return statistics.median(passes) * 1000 / len(items)


def wsgi_environs(urls: Sequence[str]) -> list[dict[str, Any]]:
    """The WSGI environ of each redirect to ``/callback`` as the server would hand it over (built
    before timing; the bench's callback URL has another path, which the engine does not check)."""
    return [EnvironBuilder(path="/callback", query_string=url.partition("?")[2], method="GET").get_environ()
            for url in urls]


def measure(db_url: str, api: str, n: int, profile: str | None) -> dict[str, float]:
    """CPU ms per start and per callback on ``db_url``, with the parts timed alone."""
    engine = make_engine(db_url, api, batch_size=CHUNK)
    try:
        items = [{"name": f"cost-{i}", **START} for i in range(2 * n)]

        def start() -> None:
            for first in range(0, len(items), CHUNK):
                engine.start_many(items[first:first + CHUNK])

        with profiled(profile == "starts"):
            per_start = cpu_ms_per(len(items), start)
        engine.run_until_idle()  # NEW -> TOKEN_ISSUED -> REDIRECTED
        waiting = engine.list(State.REDIRECTED, limit=2 * n)
        assert len(waiting) == 2 * n, engine.counts()
        urls = [provider_redirect(engine.redirect_url(a) or "") for a in waiting]
        direct, over_wsgi = urls[:n], urls[n:]

        def apply() -> None:
            for url in direct:
                outcome = engine.handle_callback(url)
                assert outcome.status == "applied", outcome

        with profiled(profile == "callbacks"):
            per_callback = cpu_ms_per(n, apply)
        app = make_app(engine)
        environs = wsgi_environs(over_wsgi)
        statuses: list[str] = []

        def start_response(status: str, _headers: Any, _exc: Any = None) -> Callable[[bytes], object]:
            statuses.append(status)
            return lambda _data: None

        def serve() -> None:
            for environ in environs:
                b"".join(app(environ, start_response))

        with profiled(profile == "wsgi"):
            per_wsgi = cpu_ms_per(n, serve)
        assert statuses == ["303 SEE OTHER"] * n, statuses[:3]
        assert engine.counts().get(State.CALLBACK_RECEIVED.value, 0) == 2 * n, engine.counts()
        # Last, so that these NEW attempts stay out of the phases above: Engine.start one at a
        # time, as an application starting one customer's connection calls it.
        singles = [{"name": f"one-{i}", **START} for i in range(n)]

        def start_one() -> None:
            for item in singles:
                engine.start(**item)

        with profiled(profile == "start"):
            per_one = cpu_ms_per(n, start_one)
        assert engine.counts().get(State.NEW.value, 0) == n, engine.counts()
        return {"start": per_start, "callback": per_callback, "wsgi": per_wsgi, "start_one": per_one,
                **parts(engine, items, urls)}
    finally:
        engine.close()


def parts(engine: Any, items: list[dict[str, Any]], urls: list[str]) -> dict[str, float]:
    """The CPU of each part of a callback and of a start, each timed alone over the same inputs."""
    params = [parse_callback(u) for u in urls]
    codec = engine.repo.codec
    requests = validate_items(items[:CHUNK])
    now = datetime.now(timezone.utc)
    secrets = [new_attempt(r, now).secrets for r in requests]
    return {
        "cb_parse": each_ms(urls, parse_callback),
        "cb_hash": each_ms(params, lambda p: (digest(p["state"]), digest(p["oauth_token"]), _canonical(p))),
        "cb_seal": each_ms(params, codec.seal),
        "start_validate": each_ms([items[:CHUNK]], validate_items) / CHUNK,
        "start_seal": each_ms(secrets, codec.seal),
    }


def report(name: str, r: dict[str, float]) -> None:
    """One table row and the parts below it."""
    print(f"{name:<11} {r['start']:>25.3f}    {r['callback']:>31.3f}    {r['wsgi']:>24.3f}", flush=True)
    db = r["callback"] - r["cb_parse"] - r["cb_hash"] - r["cb_seal"]
    print(f"  callback: parse {r['cb_parse']:.3f}, hashes {r['cb_hash']:.3f}, sealing {r['cb_seal']:.3f}, "
          f"database and the rest {db:.3f}; the WSGI layer (request, route, 303) adds "
          f"{r['wsgi'] - r['callback']:.3f}")
    rest = r["start"] - r["start_validate"] - r["start_seal"]
    print(f"  start: validation {r['start_validate']:.3f}, sealing {r['start_seal']:.3f}, "
          f"insert and the rest {rest:.3f}; Engine.start one call at a time {r['start_one']:.3f}",
          flush=True)


def compare(args: argparse.Namespace) -> None:
    """Run this script on ``--before``'s code and on this checkout's alternately; print the medians."""
    extra = ["-n", str(args.n), *(["--pg", args.pg] if args.pg else [])]
    extra += ["--pg-only"] if args.pg_only else []
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for rep in range(args.reps):
        for label, code in (("before", Path(args.before).resolve()), ("after", ROOT)):
            out = subprocess.run([sys.executable, __file__, "--code", str(code), *extra], check=True,
                                 capture_output=True, text=True).stdout
            runs[label].append(json.loads(out.rsplit("RESULT ", 1)[1]))
            print(f"rep {rep + 1}/{args.reps} {label} done", file=sys.stderr, flush=True)
    print(f"n={args.n}, {args.reps} interleaved runs each, medians of ms CPU; {machine()}")
    print("| database | per | before | after | after/before |")
    print("|---|---|---|---|---|")
    for db in runs["after"][0]:
        for key, label in (("start", "start_many attempt"), ("start_one", "Engine.start, one call"),
                           ("callback", "handle_callback"), ("wsgi", "callback through the WSGI app")):
            b, a = (statistics.median(r[db][key] for r in runs[side]) for side in ("before", "after"))
            print(f"| {db} | {label} | {b:.3f} | {a:.3f} | {a / b:.2f} |")
    print("RESULT " + json.dumps(runs))


def machine() -> str:
    """Cores, load and date: the context the figures need."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}, {datetime.now(timezone.utc):%Y-%m-%d}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="callbacks per database per path (2N attempts)")
    ap.add_argument("--pg", help="PostgreSQL URL of a database to recreate (default: SQLite only)")
    ap.add_argument("--pg-only", action="store_true", help="with --pg: skip SQLite")
    ap.add_argument("--profile", choices=("callbacks", "wsgi", "starts", "start"),
                    help="print a cProfile of that phase")
    ap.add_argument("--before", metavar="DIR", help="another checkout to compare with, interleaved")
    ap.add_argument("--reps", type=int, default=5, help="with --before: runs of each")
    ap.add_argument("--code", metavar="DIR", help="measure the project code of this checkout instead")
    args = ap.parse_args()
    if args.before:
        compare(args)
        return
    os.environ.setdefault("PROVISION_SECRET_KEY", Fernet.generate_key().decode())
    port = pg_local.free_port()
    pids = fake_api.serve(port, 1)
    try:
        fake_api.wait_ready(port)
        api = f"http://127.0.0.1:{port}"
        print(f"n={args.n}; {machine()} (a shared machine: compare figures within one run); "
              f"code of {ROOT}")
        print("database    start_many ms CPU/attempt    handle_callback ms CPU/callback    "
              "WSGI app ms CPU/callback")
        targets = [("sqlite", fresh_db(None, "cost"))] if not args.pg_only else []
        targets += [("postgresql", fresh_db(args.pg, "cost"))] if args.pg else []
        results = {}
        for name, url in targets:
            results[name] = measure(url, api, args.n, args.profile)
            report(name, results[name])
        print("RESULT " + json.dumps(results))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()

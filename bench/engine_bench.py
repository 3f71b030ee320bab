"""One timed run of element-provisioner against the shared fake Cloud Elements API.

Every attempt walks the full OAuth1 flow through the public API, exactly as an embedder would:

  Engine.start  ->  step NEW (GET /oauth/token)  ->  step TOKEN_ISSUED (GET /oauth/url)
  ->  Engine.handle_callback(<provider redirect built from the oauthUrl>)
  ->  step CALLBACK_RECEIVED (POST /instances)  ->  PROVISIONED

Modes (``--workers``):

* ``0`` (single process): this process is both the driver and the worker. Attempts are started in
  chunks of ``--chunk``; ``run_until_idle`` drives them to REDIRECTED, the driver reads the consent
  URLs (one ``Engine.list`` per chunk), delivers one callback per attempt through
  ``Engine.handle_callback`` and ``run_until_idle`` drives them to PROVISIONED. With
  ``--concurrency C`` > 1 the engine runs C steps at a time and the driver issues starts and
  callbacks C at a time (threads of this one process).
* ``1`` / ``2``: ``W`` separate worker processes (``bench/worker.py``, i.e. ``open_engine(...).run``)
  drive the steps while this process starts the attempts (``--starts many``: ``Engine.start_many``
  per ``--chunk``, as a back-office job enrolling a list would; ``each``: ``Engine.start`` per
  attempt from ``--driver-threads`` threads) and, from a second thread, follows the event feed
  (``Engine.events``: each ``attempt.redirected`` event carries the consent URL, as an
  application learns it) and delivers the callbacks through ``Engine.handle_callback``. Wall time
  runs from the first start until all attempts are PROVISIONED. ``--callbacks free`` swaps
  ``Engine.handle_callback`` for one bulk transaction per poll (``bench/free_callbacks.py``): a
  measurement of what the driver's callbacks cost the workers' cores, not the product path.
  ``--callbacks http --receivers K --browsers P`` hands each consent URL to one of P browser
  processes, which send the provider's redirect as a GET to one of K ``provision serve`` processes
  (``bench/http_callbacks.py``), and RESULT gives the receivers' CPU per callback and the
  browsers' per attempt.

Prints one ``RESULT {json}`` line like the shared scripts (``attempts_per_s`` = N / seconds).

    python bench/engine_bench.py -n 500 --api http://127.0.0.1:8765 [--pg URL] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import children  # noqa: E402
import free_callbacks  # noqa: E402
import http_callbacks  # noqa: E402
import procstat  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from http_callbacks import provider_redirect  # noqa: E402  (re-exported: memory.py, callback_cost.py)

from engine import Engine, EngineSettings  # noqa: E402
from engine.clients.elements import ElementsClient  # noqa: E402
from engine.config import client_settings_from_env  # noqa: E402
from engine.core.events import REDIRECTED  # noqa: E402
from engine.wiring import open_engine, open_repository  # noqa: E402
from states.model import State  # noqa: E402

BASE_PATH = "/elements/api-v2"


class StartKeys(TypedDict):
    """The ``Engine.start`` keywords every benchmark attempt uses (``**START``)."""

    element: str
    flow: str
    api_key: str
    api_secret: str
    callback_url: str


START: StartKeys = {"element": "quickbooks", "flow": "oauth1", "api_key": "k", "api_secret": "s",
                    "callback_url": "https://app.example/cb"}


def fresh_db(pg: str | None, tag: str) -> str:
    """A new, empty database URL (SQLite file under /tmp or a recreated PostgreSQL database)."""
    if pg:
        import sqlalchemy as sa

        u = sa.make_url(pg)
        admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
            c.exec_driver_sql(f'CREATE DATABASE "{u.database}"')
        admin.dispose()
        return pg
    path = f"/tmp/bench_engine_{tag}.sqlite"
    for suffix in ("", "-wal", "-shm", "-journal", ".key"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return f"sqlite:///{path}"


def make_engine(db_url: str, api: str, **settings: Any) -> Engine:
    client = ElementsClient(client_settings_from_env({}, base_url=api + BASE_PATH))
    return open_engine(db_url, client=client, migrate=True, settings=EngineSettings(**settings))


# --- mode 0: one process ----------------------------------------------------------------------------

def run_chunk(engine: Engine, first: int, count: int, pool: ThreadPoolExecutor | None = None) -> None:
    """Start ``count`` attempts and drive them, with their callbacks, to PROVISIONED.

    With ``pool`` (concurrency > 1) starts and callbacks are issued concurrently, as a web
    front end would serve them; steps run on the engine's own pool (EngineSettings.concurrency).
    """
    run = pool.map if pool is not None else map
    list(run(lambda i: engine.start(name=f"bench-{i}", **START), range(first, first + count)))
    engine.run_until_idle()  # NEW -> TOKEN_ISSUED -> REDIRECTED
    urls = [provider_redirect(engine.redirect_url(a) or "") for a in engine.list(State.REDIRECTED)]
    list(run(engine.handle_callback, urls))
    engine.run_until_idle()  # CALLBACK_RECEIVED -> PROVISIONED


def single_process(args: argparse.Namespace, db_url: str) -> float:
    engine = make_engine(db_url, args.api, batch_size=args.chunk, concurrency=args.concurrency)
    pool = ThreadPoolExecutor(args.concurrency) if args.concurrency > 1 else None
    try:
        run_chunk(engine, -args.warmup, args.warmup, pool)
        t0 = time.perf_counter()
        with profiler(args.profile):
            for first in range(0, args.n, args.chunk):
                run_chunk(engine, first, min(args.chunk, args.n - first), pool)
        secs = time.perf_counter() - t0
        check(engine.repo, args.n + args.warmup)
        return secs
    finally:
        if pool is not None:
            pool.shutdown()
        engine.close()


@contextmanager
def profiler(out: str | None) -> Iterator[None]:
    """Optionally run the timed section under pyinstrument and write a text profile to ``out``."""
    if not out:
        yield
        return
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: pip install -e '.[bench]'") from None

    prof = Profiler(interval=0.0005)
    prof.start()
    try:
        yield
    finally:
        prof.stop()
        Path(out).write_text(prof.output_text(unicode=False, color=False, show_all=False))


# --- modes 1, 2: separate worker processes ---------------------------------------------------------------

def multi_process(args: argparse.Namespace, db_url: str) -> tuple[float, float, dict[str, float]]:
    """Seconds from the first start to the last PROVISIONED, the driver's CPU seconds meanwhile,
    and the others': ``{"workers": s, "machine_busy": share}`` and (``--callbacks http``) the
    receivers' and the browsers' (``"receivers"``, ``"browsers"``)."""
    driver = make_engine(db_url, args.api)
    env = {**os.environ, "PROVISION_POLL_SECONDS": str(args.poll)}
    receivers = browsers = None
    if args.callbacks == "http":
        receivers = http_callbacks.Receivers(args.receivers, db_url, env)
        browsers = http_callbacks.Browsers(args.browsers, args.browser_threads, receivers.urls)
    cmd = [sys.executable, str(ROOT / "bench" / "worker.py"), db_url, args.api + BASE_PATH,
           "--concurrency", str(args.concurrency)]
    workers = [subprocess.Popen(cmd, env=env) for _ in range(args.workers)]

    def watch() -> None:  # a dead worker or browser must fail the run, not hang it
        while all(w.poll() is None for w in workers) and not (browsers and browsers.failed()):
            time.sleep(0.2)
        if any(w.returncode not in (None, 0, -15) for w in workers) or (browsers and browsers.failed()):
            print(f"a worker or browser process died: {[w.returncode for w in workers]}",
                  file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    feed = RedirectFeed(driver)
    try:
        wait_for(driver, lambda: True, 0)  # workers need a moment to import and connect
        time.sleep(1.0)
        drive(driver, range(-args.warmup, 0), args, feed, browsers)
        analyze(driver)

        def helpers_cpu() -> dict[str, float]:
            used = {"workers": procstat.total_cpu(w.pid for w in workers)}
            if receivers is not None and browsers is not None:
                used.update(receivers=receivers.cpu_seconds(), browsers=browsers.cpu_seconds())
            return used

        h0, m0 = helpers_cpu(), procstat.machine_cpu()
        t0, c0 = time.perf_counter(), time.process_time()
        drive(driver, range(args.n), args, feed, browsers)
        secs, driver_cpu = time.perf_counter() - t0, time.process_time() - c0
        h1, m1 = helpers_cpu(), procstat.machine_cpu()
        check(driver.repo, args.n + args.warmup)
        # How busy the whole machine was: near 100%, more workers cannot help on this machine.
        used = {k: h1[k] - h0[k] for k in h1}
        return secs, driver_cpu, {**used, "machine_busy": procstat.busy_share(m0, m1)}
    finally:
        if browsers is not None:
            browsers.stop()
        if receivers is not None:
            receivers.stop()
        stuck = children.stop(workers, what="worker")
        driver.close()
        if stuck:  # the figures may be fine, but a worker that ignores SIGTERM is a bug to see
            raise SystemExit(1)


class RedirectFeed:
    """The consent URLs of new ``attempt.redirected`` events, read from the event feed as an
    application would (one query per page of redirects, not a re-read of every waiting attempt;
    the feed's type filter leaves the other events in the database)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cursor = 0

    def take(self, page: int = 1000) -> list[str]:
        """The consent URLs redirected since the last call, oldest first."""
        urls: list[str] = []
        while True:
            events = self.engine.events(after=self.cursor, limit=page, types=REDIRECTED)
            self.cursor = events.cursor
            for event in events:
                if not event.data.get("consent_url"):  # only if it moved on: nothing here does
                    raise RuntimeError(f"event {event.seq} of {event.attempt_id} has no consent URL")
                urls.append(event.data["consent_url"])
            if len(events) < page:
                break
        return urls


def drive(driver: Engine, indexes: range, args: argparse.Namespace, feed: RedirectFeed,
          browsers: http_callbacks.Browsers | None) -> None:
    """Start attempts while a thread follows the event feed and answers each redirect: through
    ``Engine.handle_callback`` (``--driver-threads`` at a time), or (``browsers``) as a GET from
    a browser process to a receiver."""
    done = threading.Event()
    total = len(indexes)
    base = driver.counts().get("PROVISIONED", 0)

    def answer_callbacks() -> None:
        with ThreadPoolExecutor(args.driver_threads) as pool:
            while not done.is_set():
                fresh = feed.take()
                if browsers is not None:
                    browsers.send(fresh)
                else:
                    list(pool.map(driver.handle_callback, map(provider_redirect, fresh)))
                if not fresh:
                    time.sleep(args.poll)

    failures: list[BaseException] = []

    def answering() -> None:  # an error here must fail the run at once, not time it out
        try:
            if args.callbacks == "free":  # a measurement of the driver's share, not the product path
                free_callbacks.answer_until(driver, done, args.poll)
            else:
                answer_callbacks()
        except BaseException as exc:
            failures.append(exc)
            raise

    def finished() -> bool:
        if failures:
            raise RuntimeError("answering the callbacks failed") from failures[0]
        return driver.counts().get("PROVISIONED", 0) >= base + total

    cb = threading.Thread(target=answering, daemon=True)
    cb.start()
    if args.starts == "many":  # a back-office job enrolling a list: one transaction per chunk
        for first in range(indexes.start, indexes.stop, args.chunk):
            driver.start_many([{"name": f"bench-{i}", **START}
                               for i in range(first, min(first + args.chunk, indexes.stop))])
    else:
        with ThreadPoolExecutor(args.driver_threads) as pool:
            list(pool.map(lambda i: driver.start(name=f"bench-{i}", **START), indexes))
    # A GROUP BY over the whole table: checked every 0.1 s (<= 1% of a run), not at the 0.02 s poll.
    wait_for(driver, finished, 0.1)
    done.set()
    cb.join()


def analyze(driver: Engine) -> None:
    """Give PostgreSQL's planner the statistics of the warm-up's rows, as autovacuum would on a
    production database: on a fresh one with none (the shared test server runs without
    autovacuum) it can plan the feed's filtered read as a scan of the whole history."""
    if driver.repo.engine.dialect.name == "postgresql":
        with driver.repo.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def wait_for(driver: Engine, cond: Any, poll: float, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"not done: {driver.counts()}")
        time.sleep(poll)


def check(repo: Any, expected: int) -> None:
    """Every attempt PROVISIONED with its 4 history rows and 1 applied inbox row."""
    counts = repo.counts_by_state()
    assert counts == {"PROVISIONED": expected}, counts
    import sqlalchemy as sa

    with repo.engine.connect() as c:
        rows = c.exec_driver_sql("SELECT count(*) FROM history").scalar()
        applied = c.execute(sa.text("SELECT count(*) FROM callbacks WHERE status = 'applied'")).scalar()
    assert rows == 4 * expected and applied == expected, (rows, applied)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--api", required=True, help="base URL of a running fake_elements.py")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL database URL (dropped and recreated)")
    ap.add_argument("--workers", type=int, default=0, help="0 = single process; W = W worker processes")
    ap.add_argument("--chunk", type=int, default=50,
                    help="attempts started per chunk (single process; workers mode with --starts many)")
    ap.add_argument("--concurrency", type=int, default=1, help="steps in flight per engine (EngineSettings)")
    ap.add_argument("--driver-threads", type=int, default=4, help="workers mode: concurrent starts/callbacks")
    ap.add_argument("--starts", choices=("each", "many"), default="many",
                    help="workers mode: Engine.start per attempt, or Engine.start_many per --chunk")
    ap.add_argument("--receivers", type=int, default=2, help="--callbacks http: provision serve processes")
    ap.add_argument("--browsers", type=int, default=http_callbacks.DEFAULT_BROWSERS,
                    help="--callbacks http: processes sending the GETs, --browser-threads each "
                         "(default: a quarter of the cores, 1 to 4)")
    ap.add_argument("--browser-threads", type=int, default=http_callbacks.DEFAULT_BROWSER_THREADS,
                    help="--callbacks http: GETs in flight per browser process (default 16)")
    ap.add_argument("--callbacks", choices=("engine", "free", "http"), default="engine",
                    help="workers mode: Engine.handle_callback per attempt, or (a measurement only) "
                         "bench/free_callbacks.py's one bulk transaction per poll, or HTTP GETs to "
                         "--receivers provision serve processes")
    ap.add_argument("--poll", type=float, default=0.02, help="workers mode: idle poll interval, seconds")
    ap.add_argument("--profile", metavar="FILE", help="single process: write a pyinstrument profile")
    args = ap.parse_args()
    os.environ.setdefault("PROVISION_SECRET_KEY", Fernet.generate_key().decode())
    db_url = fresh_db(args.pg, f"w{args.workers}")
    open_repository(db_url, migrate=True).engine.dispose()  # schema via the real migration
    # The driver's CPU is what it took from the workers' cores (starts, callbacks, polling).
    driver_cpu: float | None = None
    helpers_cpu: dict[str, float] = {}
    if args.workers == 0:
        secs = single_process(args, db_url)
    else:
        secs, driver_cpu, helpers_cpu = multi_process(args, db_url)
    label = "engine" if args.workers == 0 else f"engine_{args.workers}w"
    res = {"bench": label, "db": "postgres" if args.pg else "sqlite", "n": args.n,
           "threads": args.concurrency, "workers": args.workers, "seconds": round(secs, 3),
           "attempts_per_s": round(args.n / secs, 1)}
    if driver_cpu is not None:
        res["driver_cpu_ms_per_attempt"] = round(driver_cpu * 1000 / args.n, 3)
    if helpers_cpu:
        res["worker_cpu_ms_per_attempt"] = round(helpers_cpu["workers"] * 1000 / args.n, 3)
        res["machine_busy"] = round(helpers_cpu["machine_busy"], 3)
    if "receivers" in helpers_cpu:
        res["receiver_cpu_ms_per_callback"] = round(helpers_cpu["receivers"] * 1000 / args.n, 3)
        res["browser_cpu_ms_per_attempt"] = round(helpers_cpu["browsers"] * 1000 / args.n, 3)
        res["receivers"], res["browsers"] = args.receivers, args.browsers
        res["browser_threads"] = args.browser_threads
    print(f"{label}: {args.n} attempts in {secs:.2f} s = {args.n / secs:.1f} attempts/s")
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()

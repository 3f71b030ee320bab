"""Workers survive database restarts (issue 16 item 6): 25 real PostgreSQL restarts under 3 workers.

The machine's PostgreSQL is shared, so the test brings its own server from the ``pgserver`` wheel
(``bench/pg_local.py``, the ``test`` extra) and restarts it 25 times, alternately as ``pg_ctl
restart -m fast`` and ``-m immediate`` (crash recovery), while three real ``provision worker``
processes run a stream of attempts through the sandbox. Every part of the loop meets the outage:
the claim, the commit, the wait computation (a database read) and the heartbeat. Each restart
waits for progress first (a new attempt provisioned), so the pauses are as short as the work.

Then: every worker still alive, every attempt PROVISIONED once with a gap-free history and one
instance, no lease left behind, and each worker's log says what failed without any secret. The
SQLite variants, under three workers too: the file locked for a while (its write lock held, short
of the 30 s busy timeout), and the file unavailable for writes (a real tmpfs under it filled up, so
every claim, commit and heartbeat fails with ``database or disk is full`` until space is back).
"""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from test_crash import PROVISION, assert_exactly_once, wait_for, worker_env
from test_token_spool import fill, small_disk  # noqa: F401 - small_disk is a fixture (a 4 MB tmpfs)
from testkit import QUICK_CONFIG, TEST_KEY, pg_binaries_or_skip, quick_config

from engine import Engine
from persistence.schema import attempts
from states import Flow, State

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_local  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
T = TypeVar("T")
RESTARTS = 25
WORKERS = 3
LEASE_S = 1.5  # a commit lost to a restart leaves its lease behind: progress resumes when it expires
# What may never appear in a worker's output: the key, the platform secret, the instances' tokens.
SECRETS = (TEST_KEY, "sandbox-user-secret", "sandbox-org-secret", QUICK_CONFIG["oauth.user.token"],
           QUICK_CONFIG["oauth.user.token.secret"], QUICK_CONFIG["oauth.api.secret"])


@pytest.fixture
def private_pg() -> Iterator[pg_local.LocalPostgres]:
    """A PostgreSQL server of the test's own (restarting the shared one is not allowed)."""
    bin_dir = pg_binaries_or_skip(pg_local.find_bin_dir, pg_local.PostgresBinariesMissingError)
    # No fsync: the restarts are of the server, never of the machine, and recovery stays quick.
    server = pg_local.start_postgres(bin_dir, max_connections=100, settings={"fsync": "off"})
    try:
        yield server
    finally:
        server.stop()


def retried(fn: Callable[[], T], what: str, timeout_s: float = 20.0) -> T:
    """``fn()``, tried again while the database is restarting (the test's own calls, not the workers')."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the database stayed unavailable for {what}") from None
            time.sleep(0.05)


#: Worker processes this module started; ``reap_workers`` kills those a failed test left running.
SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """A test that fails before ``finish`` stops its workers must not leave them polling for ever
    (they would load the machine for every later test)."""
    yield
    while SPAWNED:
        proc = SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def spawn(env: dict[str, str], logs: Path, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    """A ``provision worker`` whose output goes to a file (a pipe could fill up and block it)."""
    path = logs / f"worker-{n}.log"
    with open(path, "wb") as out:
        proc = subprocess.Popen([PROVISION, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    SPAWNED.append(proc)
    return proc, path


def spawn_all(env: dict[str, str], logs: Path) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    spawned = [spawn(env, logs, n) for n in range(WORKERS)]
    return [proc for proc, _path in spawned], [path for _proc, path in spawned]


def wait_running(engine: Engine) -> None:
    """Until every worker has written its heartbeat: past its start-up, which (by design) exits 1 when
    the database cannot be reached; the loop after it is what must survive."""
    wait_for(lambda: len(engine.workers()) == WORKERS, 60, "the workers to start")


def provisioned(engine: Engine) -> int:
    return retried(lambda: engine.repo.counts_by_state().get(State.PROVISIONED.value, 0), "a count")


def progress(engine: Engine, what: str, done: int | None = None) -> None:
    """Until one more attempt than ``done`` (default: now) is provisioned (a restart then meets work
    in flight, not an idle queue). Pass the count from before the last starts: the workers may
    provision them all before this call could count."""
    done = provisioned(engine) if done is None else done
    # Generous: returns as soon as one more attempt is done; a loaded 2-core CI machine after a
    # restart may need a lease expiry plus the workers' backoff before anything moves.
    wait_for(lambda: provisioned(engine) > done, 90, what)


def database_lines(paths: list[Path]) -> list[str]:
    """The workers' lines about database errors: one line each, no traceback, no SQL, no secret."""
    lines: list[str] = []
    for path in paths:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"a secret in {path.name}"
        assert "Traceback" not in text and "[SQL:" not in text, text[:3000]
        lines += [line for line in text.splitlines() if "database error" in line]
    return lines


def finish(engine: Engine, ids: list[str], workers: list[subprocess.Popen[bytes]], paths: list[Path]) -> None:
    """Every attempt provisioned exactly once, every worker alive and then stopped cleanly, no lease left."""
    def all_provisioned() -> bool:
        return all(retried(lambda: engine.get(i).state, "a read") is State.PROVISIONED  # noqa: B023
                   for i in ids)

    wait_for(all_provisioned, 60, "every attempt to be provisioned")
    for proc, path in zip(workers, paths, strict=True):
        assert proc.poll() is None, f"{path.name} exited ({proc.returncode}): {path.read_text()[-2000:]}"
    retried(lambda: assert_exactly_once(engine, ids, Flow.QUICK), "the audit")
    def count(*where: Any) -> int:
        with engine.repo.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(attempts).where(*where))
                       .scalar_one())

    # Only these attempts: a start retried after a restart lost its answer (its row committed) must
    # not have become a second attempt, which a worker could still hold at the lease count below.
    assert retried(count, "the attempt count") == len(ids)
    def leases_held() -> int:
        return count(attempts.c.lease_owner.is_not(None))

    # An attempt whose create step may have run twice (a restart lost the commit of its first run)
    # is PROVISIONED with a duplicate check due a settle time (5 s here) later
    # (states/exactly_once.after_create), which a worker leases while it runs: a full-suite run once
    # counted that lease. So first every such check is done (nothing due before the renewals,
    # months away), then no lease may be left: nothing is due, so any lease would be stuck.
    def due_soon() -> int:
        return count(attempts.c.next_run_at < engine.now() + timedelta(days=1))

    wait_for(lambda: retried(due_soon, "the due count") == 0, 60, "the duplicate checks to be done")
    # Retried: a pooled connection of this test's engine may predate the last restart.
    assert retried(leases_held, "the lease count") == 0
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc, path in zip(workers, paths, strict=True):
        assert proc.wait(30) == 0, path.read_text()[-2000:]


@pytest.mark.postgres
def test_three_workers_survive_25_postgresql_restarts(private_pg: pg_local.LocalPostgres,
                                                      engine_on: Callable[..., Engine], sandbox: Any,
                                                      tmp_path: Path) -> None:
    admin = sa.create_engine(private_pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE restarts")
    admin.dispose()
    url = private_pg.url("restarts")
    engine = engine_on(url)  # migrates the schema
    workers, paths = spawn_all(worker_env(url, sandbox, LEASE_S, PROVISION_SPOOL_DIR=str(tmp_path / "spool")),
                               tmp_path)
    ids: list[str] = []

    def start(name: str) -> str:
        # The name is the idempotency key, as a client retrying a start should have one: a start
        # whose row committed while a restart lost its answer is retried (``retried``) and must
        # return that attempt, not make a second one (it failed the lease count once in CI).
        return engine.start("quickbooks", name, flow="quick", config=quick_config(), idempotency_key=name).id

    wait_running(engine)
    ids += [start(f"Before {i}") for i in range(6)]
    for n in range(RESTARTS):
        before = provisioned(engine)
        ids += [retried(lambda: start(f"Restart {n}.{i}"), "a start") for i in range(3)]  # noqa: B023
        try:
            progress(engine, f"progress before restart {n + 1}", before)
        except AssertionError as exc:  # say whether the server is up, and what it logged
            log_tail = (private_pg.root / "server.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}; server exit code {private_pg.process.poll()}; "
                                 f"server log:\n{log_tail}") from None
        private_pg.restart("immediate" if n % 2 else "fast")
    assert private_pg.restarts == RESTARTS
    finish(engine, ids, workers, paths)
    lines = database_lines(paths)
    assert len(lines) >= RESTARTS, lines  # every restart was seen; the lines say what failed
    # The loop's lines say when it retries; a step that met the outage says it is retried.
    assert all("database error" in line and ("retrying in" in line or "; retried" in line) for line in lines)


def test_three_workers_survive_a_locked_sqlite_file(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any, tmp_path: Path) -> None:
    engine = engine_on(sqlite_url)
    workers, paths = spawn_all(worker_env(sqlite_url, sandbox), tmp_path)
    wait_running(engine)
    ids = [engine.start("quickbooks", f"Locked {i}", flow="quick", config=quick_config()).id
           for i in range(6)]
    for n in range(3):
        progress(engine, f"progress before lock {n + 1}")
        lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every worker's claim and commit now waits for the file
        try:
            time.sleep(2.0)  # realtime: the file stays locked for a while under three workers
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        ids += [engine.start("quickbooks", f"After {n}.{i}", flow="quick", config=quick_config()).id
                for i in range(3)]
    finish(engine, ids, workers, paths)
    database_lines(paths)


def test_three_workers_survive_a_full_disk_under_the_sqlite_file(
        small_disk: Path,  # noqa: F811 - the fixture imported above
        engine_on: Callable[..., Engine], sandbox: Any, tmp_path: Path) -> None:
    """The SQLite file unavailable for writes (its real tmpfs full): claims, commits and heartbeats fail
    with ``database or disk is full`` for a while; the workers go on when space is back."""
    url = f"sqlite:///{small_disk}/provision.db"
    engine = engine_on(url)
    env = worker_env(url, sandbox, PROVISION_SPOOL_DIR=str(tmp_path / "spool"))
    workers, paths = spawn_all(env, tmp_path)
    wait_running(engine)
    ids = [engine.start("quickbooks", f"Before {i}", flow="quick", config=quick_config()).id
           for i in range(3)]
    for n in range(2):
        progress(engine, f"progress before the disk fills ({n + 1})")
        ids += [engine.start("quickbooks", f"Full {n}.{i}", flow="quick", config=quick_config()).id
                for i in range(3)]  # work due while the disk is full
        seen = len(database_lines(paths))
        filler = fill(small_disk)
        try:
            wait_for(lambda: len(database_lines(paths)) > seen, 20,  # noqa: B023
                     "a worker to meet the full disk")
        finally:
            filler.unlink()
    finish(engine, ids, workers, paths)
    assert any("full" in line for line in database_lines(paths))

"""A rotated token survives a full disk under PostgreSQL (issue 16 item 1: "disk full", on PostgreSQL).

A private server (``bench/pg_local.py``, the ``pgserver`` wheel; one for the module) keeps its WAL
on a real 8 MB tmpfs of its own; the data directory stays on the ordinary disk. Why the WAL: a
COMMIT *is* a WAL flush, so a full WAL disk fails the renewal's COMMIT itself, every time. A full
data disk fails only the statement that must extend a table or index file ("could not extend
file"), which depends on how full its last page happens to be, so it would test luck, not the
commit. The server runs with ``wal_init_zero=off`` and ``wal_recycle=off`` (and initdb with both)
so that a new WAL segment takes its space when it is written, not earlier, and with
``wal_level=minimal``, no autovacuum and no timed checkpoint so that nothing else writes WAL
meanwhile. Right after the sandbox's provider rotated the token, the test closes the current WAL
segment (``pg_switch_wal()``) and fills the tmpfs. The renewal's COMMIT then needs a new segment:
PostgreSQL answers ``DiskFull`` ("could not write to file "pg_wal/xlogtemp...": No space left on
device"), PANICs, and cannot finish crash recovery while the disk is full, so it stays down, as a
production server whose WAL volume fills up does. The engine's retries meet a server that is gone,
the token goes to the spool (0600, sealed), and the worker loop (``Engine.run``, in a thread)
survives. Then space is freed and the server started; the next tick drains the spool, the attempt
is PROVISIONED and pushed, and the next renewal with the stored token is accepted by the provider.
The tmpfs needs root (skipped otherwise, with the reason); CI runs as root.
"""
from __future__ import annotations

import re
import shutil
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from integration.fault_audit import Tally, audit
from test_crash import wait_for
from test_token_spool import after_the_provider, assert_renews_again, fill, provision, tmpfs
from testkit import pg_binaries_or_skip

from engine import Engine, EngineSettings
from engine.clock import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_local  # noqa: E402

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.slow, pytest.mark.realtime, pytest.mark.clock_at(T0), pytest.mark.sandbox_on_clock]
WAL_DISK_MB = 8  # the WAL of one quiet test database in 1 MB segments, with room to spare
# Nothing but the engine writes WAL between the fill and the renewal's COMMIT (see the docstring).
QUIET_WAL = {"wal_init_zero": "off", "wal_recycle": "off", "wal_level": "minimal",
             "max_wal_senders": "0", "autovacuum": "off", "checkpoint_timeout": "1d"}
DISK_FULL = "No space left on device"


@dataclass(frozen=True)
class WalDiskServer:
    """A private PostgreSQL whose WAL lives on the tmpfs ``wal_disk``."""

    server: pg_local.LocalPostgres
    wal_disk: Path

    def log(self) -> str:
        path: Path = self.server.root / "server.log"
        return path.read_text(errors="replace")


@pytest.fixture(scope="module")
def wal_disk_pg() -> Iterator[WalDiskServer]:
    """One server for the module (initdb costs seconds); its WAL on an 8 MB tmpfs."""
    bin_dir = pg_binaries_or_skip(pg_local.find_bin_dir, pg_local.PostgresBinariesMissingError)
    mount = Path(tempfile.mkdtemp(prefix="pg-wal-disk-"))
    owner = pg_local.server_owner()  # initdb and postgres run as this user when we are root
    options = f"size={WAL_DISK_MB}m,mode=0700" + (f",uid={owner[0]},gid={owner[1]}" if owner else "")
    try:
        with tmpfs(mount, options):
            server = pg_local.start_postgres(
                bin_dir, max_connections=30, settings={"fsync": "off", **QUIET_WAL},
                initdb_args=["--waldir", str(mount / "wal"), "--wal-segsize", "1",
                             "-c", "wal_recycle=off", "-c", "wal_init_zero=off"])
            try:
                yield WalDiskServer(server, mount)
            finally:
                server.stop()
    finally:
        shutil.rmtree(mount, ignore_errors=True)


@pytest.fixture
def wal_disk_url(wal_disk_pg: WalDiskServer) -> Iterator[str]:
    """A new schema on the private server (its search_path); afterwards space is freed, the server
    is up again and the schema dropped, whatever the test left."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(wal_disk_pg.server.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield sa.make_url(wal_disk_pg.server.url()).update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        (wal_disk_pg.wal_disk / "filler").unlink(missing_ok=True)
        if wal_disk_pg.server.process.poll() is not None:
            wal_disk_pg.server.restart()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def fill_the_wal_disk(pg: WalDiskServer) -> Path:
    """Close the current WAL segment, then fill its disk: the next WAL write needs space it lacks."""
    admin = sa.create_engine(pg.server.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql("SELECT pg_switch_wal()")
    admin.dispose()
    filler: Path = fill(pg.wal_disk)
    return filler


@dataclass(frozen=True)
class Outage:
    """What the full WAL disk did: the spool entry it left (its mode and bytes), the server's log."""

    entry_mode: int
    entry_bytes: bytes
    server_log: str


def renew_through_a_full_wal_disk(engine: Engine, pg: WalDiskServer, spool: Path, clock: FakeClock,
                                  attempt: Any) -> Outage:
    """Run ``engine``'s worker loop while the renewal of ``attempt`` (due now) meets the full WAL
    disk, until the token is in the spool and the server is down; free the space, start the
    server, and wait until the spool is drained and the renewal pushed. The loop must survive."""
    filler: list[Path] = []
    after_the_provider(engine, lambda: filler.append(fill_the_wal_disk(pg)))
    clock.now = attempt.next_run_at
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,), name="worker-loop", daemon=True)
    worker.start()
    try:
        wait_for(lambda: bool(list(spool.glob("*.spool"))), 30, "the rotated token in the spool")
        # Recovery needs WAL space too: the postmaster gives up ("aborting startup").
        wait_for(lambda: pg.server.process.poll() is not None, 30, "the server to stop")
        [entry] = spool.glob("*.spool")
        outage = Outage(stat.S_IMODE(entry.stat().st_mode), entry.read_bytes(), pg.log())
        assert worker.is_alive()
        filler[0].unlink()
        pg.server.restart()

        def pushed() -> bool:
            a = engine.get(attempt.id)
            return a.renewals == attempt.renewals + 1 and a.next_run_at is not None and \
                a.next_run_at > clock() and not list(spool.glob("*.spool"))

        wait_for(pushed, 30, "the spooled renewal to be drained and pushed")
        assert worker.is_alive()
    finally:
        stop.set()
        engine.wake()
        worker.join(30)
    assert not worker.is_alive(), "the worker loop did not stop"
    return outage


def test_a_full_wal_disk_at_the_renewal_commit_spools_the_token(
        wal_disk_pg: WalDiskServer, wal_disk_url: str, engine_on: Callable[..., Engine], clock: FakeClock,
        sandbox: Any, waits: list[float], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    engine = engine_on(wal_disk_url, clock=clock,
                       settings=EngineSettings(spool_dir=str(spool), poll_max_s=0.2))
    a = provision(engine)
    spent = a.secrets["user_tokens"]
    outage = renew_through_a_full_wal_disk(engine, wal_disk_pg, spool, clock, a)
    # The renewal's own write met the full disk at its commit (a one-statement transaction on
    # PostgreSQL: the server names that statement), and the server went down with it.
    assert re.search(r'PANIC: +could not write to file "pg_wal/xlogtemp\.\d+": No space left on device'
                     r".*Failed process was running: [^\n]*\n?[^\n]*UPDATE attempts", outage.server_log,
                     re.DOTALL), outage.server_log[-3000:]
    # Crash recovery needs WAL space too: down until space is back.
    assert re.search(r"(shutting down|aborting startup) due to startup process failure", outage.server_log)
    assert "psycopg.errors.DiskFull" in caplog.text and DISK_FULL in caplog.text
    assert waits[:2] == [0.5, 2.0]  # retried, then spooled
    assert "tick failed (1 in a row): database error" in caplog.text  # caught by the loop, which went on
    assert outage.entry_mode == 0o600
    after = engine.get(a.id)
    tokens = after.secrets["user_tokens"]
    assert tokens["oauth.user.refresh_token"] != spent["oauth.user.refresh_token"]
    for secret in (tokens["oauth.user.token"], tokens["oauth.user.refresh_token"]):
        assert secret not in caplog.text and secret.encode() not in outage.entry_bytes  # sealed
    assert [h.note for h in engine.history(a.id)][-1] == "kept in the token spool"
    assert_renews_again(engine, sandbox, a.id, clock, renewals=a.renewals + 1)
    assert audit(engine, sandbox, [a.id]) == Tally(1)  # not lost, no second instance, no history gap

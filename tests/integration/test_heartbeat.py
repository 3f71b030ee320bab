"""Worker heartbeats (migration 0009): written at most every few seconds, on the database's clock,
with the key ids the worker holds; a rewritten key file is picked up by the next heartbeat."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from testkit import TEST_KEY

from engine.core.heartbeat import Heartbeat
from engine.security.crypto import key_id, load_codec
from engine.security.rotation import write_key_file
from engine.wiring import open_repository
from persistence.workers import beat, live_workers


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_is_rate_limited_and_advertises_reloaded_keys(tmp_path: Path) -> None:
    db_path = tmp_path / "hb.db"
    repo = open_repository(f"sqlite:///{db_path}", environ={})  # creates the key file (empty database)
    key_file = tmp_path / "hb.db.key"
    old = key_file.read_text().strip().encode()
    keys = load_codec(db_path, None)
    ticks = Ticks()
    beat = Heartbeat(repo.engine, keys, every_s=5, monotonic=ticks)
    assert beat.after_tick("w1", 3) is True
    assert beat.after_tick("w1", 0) is False  # not due: the hot path pays nothing
    [row] = live_workers(repo.engine, timedelta(seconds=60))
    assert (row.worker_id, row.role, row.key_ids, row.leases) == ("w1", "worker", (key_id(old),), 3)
    new = Fernet.generate_key()
    write_key_file(key_file, [new, old])  # a rotation publishes NEW,OLD
    ticks.now += 5
    assert beat.after_tick("w1", 1) is True
    [row] = live_workers(repo.engine, timedelta(seconds=60))
    assert row.key_ids == (key_id(new), key_id(old)) and row.leases == 1
    assert keys.is_current(keys.seal({"a": 1}))  # and it writes with NEW now
    assert Fernet(new).decrypt(keys.seal({"a": 1}))
    assert live_workers(repo.engine, timedelta(seconds=-60)) == []  # older than the cut-off: dead
    beat.stop("w1")
    assert live_workers(repo.engine, timedelta(seconds=60)) == []
    repo.close()


def test_live_workers_on_the_database_clock(db_url: str) -> None:
    """Both backends: the heartbeat's time is the database's, the cut-off too."""
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    beat(repo.engine, "w-pg", host="h", pid=7, role="console", key_ids=("aaaa0000", "bbbb1111"), leases=0)
    beat(repo.engine, "w-pg", host="h", pid=7, role="console", key_ids=("aaaa0000",), leases=2)  # upsert
    [row] = live_workers(repo.engine, timedelta(minutes=5))
    assert (row.role, row.key_ids, row.leases) == ("console", ("aaaa0000",), 2)
    assert row.started_at <= row.last_tick_at
    assert live_workers(repo.engine, timedelta(seconds=-60)) == []
    repo.close()

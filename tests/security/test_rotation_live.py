"""Key rotation on a live system (issue 16 item 2): workers take part, nothing becomes unreadable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from testkit import TEST_KEY, quick_config

from engine import Engine
from engine.config import ENV_KEY
from engine.errors import SecretKeyError
from engine.security.crypto import key_id
from engine.security.rotation import rotate_keys
from engine.wiring import open_engine
from persistence.quarantine import quarantined_rows
from persistence.schema import attempts
from persistence.workers import beat
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))


def sealed_blobs(db_path: Path) -> list[bytes]:
    db = sa.create_engine(f"sqlite:///{db_path}")
    with db.connect() as conn:
        found = [bytes(r[0]) for r in conn.execute(sa.select(attempts.c.secrets)) if r[0]]
    db.dispose()
    return found


def test_rotation_waits_for_a_lagging_worker_and_changes_nothing(
    sqlite_url: str, engine_on: Callable[..., Engine]
) -> None:
    engine = engine_on(sqlite_url)
    engine.start("quickbooks", "one", flow="quick", config=quick_config())
    old = TEST_KEY.encode()
    beat(engine.repo.engine, "stale-worker", host="h", pid=1, role="worker", key_ids=(key_id(old),), leases=0)
    new = Fernet.generate_key()
    waited: list[float] = []
    ticks = iter(range(1000))
    with pytest.raises(SecretKeyError) as refused:
        rotate_keys(sqlite_url, environ={"PROVISION_SECRET_KEY": f"{new.decode()},{TEST_KEY}"},
                    wait_s=5, sleep=waited.append, monotonic=lambda: float(next(ticks)))
    assert "stale-worker" in str(refused.value) and key_id(old) in str(refused.value)
    assert waited  # it waited for the worker before giving up
    db_path = Path(sqlite_url.removeprefix("sqlite:///"))
    for blob in sealed_blobs(db_path):  # no row was re-encrypted
        Fernet(old).decrypt(blob)
    beat(engine.repo.engine, "stale-worker", host="h", pid=1, role="worker",
         key_ids=(key_id(new), key_id(old)), leases=0)  # it reloaded: the rotation goes through
    report = rotate_keys(sqlite_url, environ={"PROVISION_SECRET_KEY": f"{new.decode()},{TEST_KEY}"},
                         wait_s=0, sleep=waited.append)
    assert report.complete and report.workers == 1 and report.attempts == 1


def test_rotation_releases_what_a_worker_holding_old_alone_quarantined(
    db_url: str, engine_on: Callable[..., Engine], sandbox: Any
) -> None:
    """Regression test (found writing the PostgreSQL case of the live test below): with
    ``PROVISION_SECRET_KEY`` set to NEW,OLD, the workers are restarted one by one, each successor
    started before its predecessor stops (a rolling restart). In that overlap a worker still holding
    OLD alone claims a row sealed under NEW and quarantines it; its successor had started already, and
    a worker releases quarantined rows only at its start, so the row stayed parked
    (``unreadable_secrets``) after the rotation reported success. The rotation opens every row with
    NEW,OLD: now it releases it. The live test hits that overlap only by chance; this one always."""
    holding_old = engine_on(db_url)  # TEST_KEY = OLD alone
    new = Fernet.generate_key()
    both = {ENV_KEY: f"{new.decode()},{TEST_KEY}", "ELEMENTS_BASE_URL": sandbox.base_url}
    successor = open_engine(db_url, environ=both)
    try:
        parked = successor.start("quickbooks", "sealed under NEW", flow="quick", config=quick_config())
        holding_old.run_until_idle()
        assert quarantined(db_url) == [parked.id]
        beat(successor.repo.engine, "successor", host="h", pid=2, role="worker",
             key_ids=(key_id(new), key_id(TEST_KEY.encode())), leases=0)
        report = rotate_keys(db_url, environ=both, wait_s=0)
        assert report.complete and report.released == 1 and quarantined(db_url) == []
        successor.run_until_idle()
        assert successor.get(parked.id).state is State.PROVISIONED
    finally:
        successor.close()


def quarantined(url: str) -> list[str]:
    """The ids of the attempts parked as unreadable (``persistence.quarantine``)."""
    db = sa.create_engine(url)
    try:
        with db.connect() as conn:
            return [row["id"] for row in quarantined_rows(conn)]
    finally:
        db.dispose()


def cli_env(sandbox: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "ELEMENTS_"))}
    env.update({"ELEMENTS_BASE_URL": sandbox.base_url, "PYTHONUNBUFFERED": "1",
                "PROVISION_POLL_SECONDS": "1"})
    return env


def provision(db: Path, env: dict[str, str], *args: str,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``provision`` on the SQLite file ``db``."""
    return subprocess.run([PROVISION, "--db", f"sqlite:///{db}", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_quick(db: Path, env: dict[str, str], name: str) -> str:
    config = [x for k, v in quick_config().items() for x in ("--config", f"{k}={v}")]
    done = provision(db, env, "start", "--element", "quickbooks", "--flow", "quick", "--name", name, *config)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(300)  # real worker processes; minutes on a loaded CI machine
def test_rotation_while_two_workers_run(sandbox: Any, tmp_path: Path) -> None:
    db, env = tmp_path / "live.db", cli_env(sandbox)
    first = [start_quick(db, env, f"before {i}") for i in range(3)]  # creates the key file
    old = (tmp_path / "live.db.key").read_text().strip().encode()
    log = (tmp_path / "workers.log").open("w")  # a pipe nobody reads would block the workers
    workers = [subprocess.Popen([PROVISION, "--db", f"sqlite:///{db}", "worker"], env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=log) for _ in range(2)]
    started: list[str] = []
    listed: list[int] = []
    stop = threading.Event()

    def keep_flowing() -> None:  # attempts keep coming and `list` keeps working during the rotation
        while not stop.is_set():
            started.append(start_quick(db, env, f"during {len(started)}"))
            listed.append(provision(db, env, "list").returncode)

    try:
        deadline = time.monotonic() + 30
        while provision(db, env, "--json", "workers").stdout.count('"worker_id"') < 2:
            assert time.monotonic() < deadline, "workers did not beat"
            time.sleep(0.2)
        flow = threading.Thread(target=keep_flowing)
        flow.start()
        rotated = provision(db, env, "--json", "keys", "rotate", timeout=120)
        stop.set()
        flow.join(timeout=60)
        assert rotated.returncode == 0, rotated.stderr
        new = (tmp_path / "live.db.key").read_text().strip().encode()
        assert new != old and b"," not in new  # OLD retired
        deadline = time.monotonic() + 120  # generous: CI machines run other suites beside this one
        ids = first + started
        while True:
            listing = json.loads(provision(db, env, "--json", "list").stdout)["attempts"]
            states = {a["id"]: a["state"] for a in listing}
            if set(states) == set(ids) and set(states.values()) == {"PROVISIONED"}:
                break
            assert time.monotonic() < deadline, (states, provision(db, env, "list").stdout,
                                                 (tmp_path / "workers.log").read_text()[-3000:])
            time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
        log.close()
    assert listed and set(listed) == {0}
    assert all(w.returncode == 0 for w in workers)
    for blob in sealed_blobs(db):  # every row opens with NEW alone, none with OLD
        Fernet(new).decrypt(blob)
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(blob)
    assert len(sealed_blobs(db)) == len(ids)


@pytest.mark.slow
@pytest.mark.timeout(300)  # real worker processes; minutes on a loaded CI machine
def test_rotation_killed_midway_is_finished_by_a_rerun(sandbox: Any, tmp_path: Path) -> None:
    db, env = tmp_path / "kill.db", cli_env(sandbox)
    start_quick(db, env, "first")  # creates the key file
    old = (tmp_path / "kill.db.key").read_text().strip().encode()
    engine = open_engine(f"sqlite:///{db}", environ={**env, "PROVISION_SECRET_KEY": old.decode()})
    engine.start_many([{"element": "quickbooks", "name": f"n{i}", "flow": "quick", "config": quick_config()}
                       for i in range(400)])
    engine.close()
    before = len(sealed_blobs(db))
    rotate = subprocess.Popen([PROVISION, "--db", f"sqlite:///{db}", "keys", "rotate", "--batch-size", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:  # kill -9 once some rows, not all, are under NEW
        keys = (tmp_path / "kill.db.key").read_text().strip().split(",")
        if len(keys) == 2:
            under_new = sum(1 for b in sealed_blobs(db) if _opens(keys[0].encode(), b))
            if under_new >= 20:
                break
        assert time.monotonic() < deadline and rotate.poll() is None, "rotation ended before the kill"
        time.sleep(0.05)
    rotate.send_signal(signal.SIGKILL)
    rotate.wait()
    new = keys[0].encode()
    assert 0 < under_new < before
    rerun = provision(db, env, "--json", "keys", "rotate", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "kill.db.key").read_text().strip().encode() == new  # the same NEW, OLD retired
    blobs = sealed_blobs(db)
    assert len(blobs) == before  # no row lost
    assert all(_opens(new, b) for b in blobs)
    assert provision(db, env, "list").returncode == 0
    assert State.NEW.value in provision(db, env, "list").stdout


def _opens(key: bytes, blob: bytes) -> bool:
    try:
        Fernet(key).decrypt(blob)
    except InvalidToken:
        return False
    return True

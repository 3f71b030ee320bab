"""SQLite's WAL checkpoints run on the store's own thread, not in a commit (persistence.checkpoints).

A real SQLite file: with the automatic checkpoint raised to its safety net, the database file only
grows when something copies the WAL back into it, which here only the store's thread does.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from testkit import TEST_KEY

from engine.wiring import open_repository
from persistence import Repository
from persistence.checkpoints import CHECKPOINT_EVERY_COMMITS, WalCheckpointer
from persistence.database import SAFETY_AUTOCHECKPOINT_PAGES
from states import Attempt, Flow, State

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Repository, Path]]:
    path = tmp_path / "provision.db"
    repo = open_repository(f"sqlite:///{path}", migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    yield repo, path
    repo.engine.dispose()


def attempt() -> Attempt:
    return Attempt(id=str(uuid.uuid4()), element_key="quickbooks", flow=Flow.OAUTH1, name="x" * 200,
                   state=State.NEW, version=1, created_at=T0, updated_at=T0, next_run_at=T0,
                   secrets={"config": {"oauth.api.secret": "s" * 500}})


def watched(checkpointer: WalCheckpointer) -> threading.Semaphore:
    """A semaphore released after each pass of ``checkpointer``'s thread (the pass itself unchanged)."""
    done = threading.Semaphore(0)
    run = checkpointer.checkpoint

    def checkpoint() -> None:
        run()
        done.release()

    checkpointer.checkpoint = checkpoint  # type: ignore[method-assign]
    return done


def test_the_stores_thread_checkpoints_every_so_many_commits(store: tuple[Repository, Path]) -> None:
    repo, path = store
    with repo.engine.connect() as conn:  # the commit's own checkpoint is only a safety net now
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == SAFETY_AUTOCHECKPOINT_PAGES
    checkpointer = repo._checkpointer  # noqa: SLF001 - the store's own, observed
    assert checkpointer is not None
    passes = watched(checkpointer)
    size = os.path.getsize(path)
    for _ in range(CHECKPOINT_EVERY_COMMITS - 1):
        repo.insert_attempt(attempt())
    assert not passes.acquire(timeout=0.2)  # not due yet
    assert os.path.getsize(path) == size  # the commits went to the WAL only
    repo.insert_attempt(attempt())  # the 50th
    assert passes.acquire(timeout=10)
    assert checkpointer.passes == 1
    assert os.path.getsize(path) > size  # the WAL's pages were copied back into the file
    with repo.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM attempts").scalar() == CHECKPOINT_EVERY_COMMITS


def test_disposing_the_engine_ends_the_thread_and_later_commits_start_another(
        store: tuple[Repository, Path]) -> None:
    repo, _path = store
    checkpointer = repo._checkpointer  # noqa: SLF001
    assert checkpointer is not None
    passes = watched(checkpointer)

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "provision-wal-checkpoint" and t.is_alive()]

    before = set(threads())
    for _ in range(CHECKPOINT_EVERY_COMMITS):
        repo.insert_attempt(attempt())
    assert passes.acquire(timeout=10)
    [mine] = set(threads()) - before
    repo.engine.dispose()
    assert not mine.is_alive()
    for _ in range(CHECKPOINT_EVERY_COMMITS):  # a disposed engine can still be used: so can the store
        repo.insert_attempt(attempt())
    assert passes.acquire(timeout=10)
    assert checkpointer.passes == 2


def test_a_checkpoint_that_cannot_run_is_skipped_quietly(tmp_path: Path) -> None:
    db = sa.create_engine(f"sqlite:///{tmp_path}/gone/provision.db")  # a folder that does not exist
    checkpointer = WalCheckpointer(db)
    checkpointer.checkpoint()  # logged at debug, not raised: the next pass or SQLite's own does it
    assert checkpointer.passes == 1
    db.dispose()

"""Repository contract, run on SQLite and on PostgreSQL (STYLE habit 5)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from testkit import TEST_KEY

from engine.wiring import open_repository
from persistence import NewCallback, Repository
from persistence.schema import attempts, metadata
from persistence.writes import reschedule_write, transition_write
from states import Attempt, Flow, HistoryEntry, State

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def repo(db_url: str) -> Iterator[Repository]:
    r = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    yield r
    r.engine.dispose()


def new_attempt(**kw: object) -> Attempt:
    base: dict[str, object] = dict(
        id=str(uuid.uuid4()), element_key="quickbooks", flow=Flow.OAUTH1, name="Acme", state=State.NEW,
        version=1, created_at=T0, updated_at=T0, next_run_at=T0, tags=("a", "b"),
        secrets={"config": {"oauth.api.secret": "planted-secret-123"}},
    )
    base.update(kw)
    return Attempt(**base)  # type: ignore[arg-type]


def entry(a: Attempt, trigger: str, dest: State, at: datetime = T0) -> HistoryEntry:
    return HistoryEntry(a.id, a.history_seq + 1, trigger, a.state.value, dest.value, at, 5, "w", "ok", 1)


def test_migrations_match_schema(repo: Repository) -> None:
    with repo.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


@pytest.mark.postgres
def test_attempts_pages_keep_room_for_heap_only_updates(pg_schema_url: str) -> None:
    # A PostgreSQL storage parameter (SQLite has none), set by migration 0002.
    engine = open_repository(pg_schema_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY}).engine
    try:
        with engine.connect() as conn:
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE oid = 'attempts'::regclass").scalar_one()
    finally:
        engine.dispose()
    assert options == ["fillfactor=70"]


@pytest.mark.postgres
def test_single_statements_use_a_pool_of_autocommit_connections(pg_schema_url: str) -> None:
    repo = open_repository(pg_schema_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    main, auto = repo.engines
    assert main is repo.engine
    with repo._read() as conn:  # no isolation level set and reset around each statement
        driver = conn.connection.driver_connection
        assert conn.engine is auto and driver is not None and driver.autocommit is True
    with repo._write() as conn:  # transactions still are transactions
        driver = conn.connection.driver_connection
        assert conn.engine is main and driver is not None and driver.autocommit is False
    pool = auto.pool
    assert isinstance(pool, sa.QueuePool) and pool.checkedin() == 1
    repo.engine.dispose()  # disposing the repository's engine closes the autocommit pool too
    assert isinstance(auto.pool, sa.QueuePool) and auto.pool.checkedin() == 0


def test_sqlite_has_one_engine(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        assert repo.engines == (repo.engine,)
    finally:
        repo.engine.dispose()


def test_insert_get_roundtrip_with_secrets_encrypted(repo: Repository) -> None:
    a, created = repo.insert_attempt(new_attempt())
    assert created
    got = repo.get(a.id)
    assert got is not None
    assert got.state is State.NEW and got.flow is Flow.OAUTH1 and got.tags == ("a", "b")
    assert got.created_at == T0 and got.created_at.tzinfo is not None
    assert got.secrets == {"config": {"oauth.api.secret": "planted-secret-123"}}
    with repo.engine.connect() as conn:
        raw = conn.execute(sa.select(attempts.c.secrets).where(attempts.c.id == a.id)).scalar_one()
    assert b"planted-secret-123" not in bytes(raw)


def test_idempotency_key_returns_the_existing_attempt(repo: Repository) -> None:
    first, created = repo.insert_attempt(new_attempt(idempotency_key="job-42"))
    again, created_again = repo.insert_attempt(new_attempt(idempotency_key="job-42"))
    assert created and not created_again and again.id == first.id
    assert len(repo.list()) == 1


def test_a_transition_is_guarded_by_version(repo: Repository) -> None:
    a, _ = repo.insert_attempt(new_attempt())
    assert repo.apply(transition_write(a, entry(a, "issue_token", State.TOKEN_ISSUED), owner=None, now=T0,
                                       next_run_at=T0, changes={"request_token_hash": "h"}))
    # The same stale read again (a second worker, a replayed command): nothing happens.
    assert not repo.apply(transition_write(a, entry(a, "issue_token", State.TOKEN_ISSUED), owner=None, now=T0,
                                           next_run_at=T0))
    got = repo.get(a.id)
    assert got is not None and got.state is State.TOKEN_ISSUED and got.version == 2 and got.history_seq == 1
    assert got.request_token_hash == "h"
    assert [(h.seq, h.trigger, h.source, h.dest) for h in repo.history(a.id)] == [
        (1, "issue_token", "NEW", "TOKEN_ISSUED")]


def test_decisions_may_not_set_engine_columns(repo: Repository) -> None:
    a, _ = repo.insert_attempt(new_attempt())
    with pytest.raises(ValueError, match="may not set"):
        repo.apply(transition_write(a, entry(a, "issue_token", State.TOKEN_ISSUED), owner=None, now=T0,
                                    next_run_at=None, changes={"state": "PROVISIONED"}))
    assert repo.history(a.id) == []


def test_claim_leases_due_work_once_until_the_lease_expires(repo: Repository) -> None:
    due, _ = repo.insert_attempt(new_attempt())
    later, _ = repo.insert_attempt(new_attempt(next_run_at=T0 + timedelta(hours=1)))
    idle, _ = repo.insert_attempt(new_attempt(next_run_at=None))
    got = repo.claim_due(T0, "w1", T0 + timedelta(seconds=60), 10)
    assert [a.id for a in got] == [due.id] and got[0].runs == 1 and got[0].lease_owner == "w1"
    assert repo.claim_due(T0 + timedelta(seconds=30), "w2", T0 + timedelta(seconds=90), 10) == []
    # The lease expired (worker w1 died): w2 takes it over, and w1's late commit is refused.
    again = repo.claim_due(T0 + timedelta(seconds=61), "w2", T0 + timedelta(seconds=200), 10)
    assert [a.id for a in again] == [due.id] and again[0].runs == 2
    late = transition_write(got[0], entry(got[0], "issue_token", State.TOKEN_ISSUED), owner="w1", now=T0,
                            next_run_at=None)
    assert not repo.apply(late)
    taken_over = transition_write(again[0], entry(again[0], "issue_token", State.TOKEN_ISSUED), owner="w2",
                                  now=T0, next_run_at=None)
    assert repo.apply(taken_over)
    assert repo.next_due_at() == later.next_run_at
    assert idle.id not in [
        a.id for a in repo.claim_due(T0 + timedelta(days=9), "w3", T0 + timedelta(days=10), 10)
    ]


def test_reschedule_counts_failures_and_keeps_state(repo: Repository) -> None:
    a, _ = repo.insert_attempt(new_attempt())
    [c] = repo.claim_due(T0, "w", T0 + timedelta(seconds=60), 1)
    err = {"kind": "unavailable", "message": "HTTP 503"}
    assert repo.apply(reschedule_write(c, owner="w", now=T0, next_run_at=T0 + timedelta(seconds=5), error=err,
                                       count_failure=True))
    got = repo.get(a.id)
    assert got is not None and got.state is State.NEW and got.failures == 1 and got.last_error == err
    assert got.lease_owner is None and got.next_run_at == T0 + timedelta(seconds=5)
    assert repo.history(a.id) == []


def test_callback_inbox_rows(repo: Repository) -> None:
    a, _ = repo.insert_attempt(new_attempt())
    cid = repo.record_callback(
        NewCallback(a.id, T0, {"oauth_verifier": "v-planted"}, "d1", "pending", "early")
    )
    repo.update_callback(cid, "applied", None)
    [row] = repo.callbacks(a.id)
    assert row.status == "applied" and row.digest == "d1"
    assert repo.codec.open(row.params or b"") == {"oauth_verifier": "v-planted"}
    assert b"v-planted" not in (row.params or b"")


def test_concurrent_claims_are_disjoint(repo: Repository) -> None:
    ids = {repo.insert_attempt(new_attempt())[0].id for _ in range(40)}
    got: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def claim(owner: str) -> None:
        barrier.wait()
        mine: list[str] = []
        while batch := repo.claim_due(T0, owner, T0 + timedelta(seconds=60), 3):
            mine.extend(a.id for a in batch)
        got[owner] = mine

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for mine in got.values() for i in mine]
    assert sorted(claimed) == sorted(ids)  # every attempt exactly once


def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    r = open_repository(sqlite_url, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    with r.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    r.engine.dispose()

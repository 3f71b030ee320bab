"""The feed's positions on PostgreSQL (migration 0012): no commit waits for another, and a reader
that resumes from the last position it saw never skips an event, whatever order commits land in."""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import QBO

from engine import Engine
from engine.core import events as ev
from persistence.outbox import Outbox
from persistence.schema import attempts, history

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

pytestmark = pytest.mark.postgres


def history_row(attempt_id: str, seq: int = 1, **kw: Any) -> dict[str, Any]:
    """A history row (its trigger writes the event) of a redirect, unless ``kw`` says otherwise."""
    return dict(attempt_id=attempt_id, seq=seq, trigger="redirect", source="NEW", dest="REDIRECTED", at=T0,
                duration_ms=1, worker="sql", outcome="ok", tries=1, error=None, note=None) | kw


def test_an_event_written_first_and_committed_last_comes_after_in_the_feed(
        engine_on: Callable[..., Engine], pg_schema_url: str) -> None:
    """T1 writes its event first (the deferred trigger fired at once), T2 writes one and commits:
    T2's COMMIT does not wait for T1, the feed shows T2's event, and T1's, committed later, comes
    after it. No position is ever taken by an open transaction."""
    engine = engine_on(pg_schema_url)
    a = engine.start("quickbooks", "t1", flow="oauth2", **QBO)
    b = engine.start("quickbooks", "t2", flow="oauth2", **QBO)
    c = engine.start("quickbooks", "t3", flow="oauth2", **QBO)
    db = sa.create_engine(pg_schema_url)
    t1, t2 = db.connect(), db.connect()
    try:
        t1.begin()
        t1.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")  # T1's event row is written now...
        t1.execute(history.insert(), history_row(a.id))
        t2.begin()
        t2.execute(history.insert(), history_row(b.id))
        committed = threading.Event()

        def commit_t2() -> None:
            t2.commit()
            committed.set()

        threading.Thread(target=commit_t2, daemon=True).start()
        # ...and T2's commit does not wait for T1 (migration 0004's lock made it wait for T1's end).
        if not committed.wait(10):
            t1.rollback()  # lets T2 finish, so that the test fails instead of hanging
            pytest.fail("T2's COMMIT waited for the open transaction T1")
        seen = engine.events()
        assert [e.attempt_id for e in seen] == [b.id]
        assert engine.events(types=ev.REDIRECTED).cursor == seen.cursor == seen[0].seq
        t1.commit()
        later = engine.events(after=seen.cursor)
        assert [e.attempt_id for e in later] == [a.id] and later[0].seq == seen.cursor + 1
        with db.connect() as conn:  # a's row was written first: the smaller row number
            seqs = {str(i): int(n) for i, n in conn.execute(sa.text("SELECT attempt_id, seq FROM events"))}
        assert seqs[a.id] < seqs[b.id]
        # An open transaction holds no position: later commits never leave a gap behind it.
        t1.begin()
        t1.execute(history.insert(), history_row(a.id, 2, trigger="fail", source="REDIRECTED", dest="FAILED",
                                                 note="cancelled"))
        engine.cancel(c.id)
        cursor = engine.events()[-1].seq
        assert engine.events()[-1].attempt_id == c.id
        # A reader of another type resumes at the feed's end, past c's event: T1's comes after it.
        rare = engine.events(types=ev.PROVISIONED)
        assert rare == [] and rare.cursor == cursor
        t1.commit()
        assert [e.attempt_id for e in engine.events(after=cursor)] == [a.id]
        assert [e.attempt_id for e in engine.events(after=rare.cursor, types=ev.FAILED)] == [a.id]
    finally:
        t1.close()
        t2.close()
        db.dispose()


def test_concurrent_writers_and_readers_see_every_event_once_in_order(pg_schema_url: str) -> None:
    """Writers commit events in transactions of random length while readers follow the feed from
    position 0. Every reader sees positions 1..N with none missing or repeated, and each
    attempt's events in the order it wrote them."""
    writers, per_writer, readers = 6, 40, 3
    db = sa.create_engine(pg_schema_url, pool_size=writers + readers + 2)
    from persistence.migrate import upgrade  # noqa: PLC0415 - the schema only, no engine needed

    upgrade(db)
    ids = [str(uuid.uuid4()) for _ in range(writers)]
    with db.begin() as conn:
        conn.execute(attempts.insert(), [dict(
            id=i, element_key="quickbooks", flow="oauth2", name=f"w{n}", tags=[], state="PROVISIONED",
            version=1, history_seq=0, runs=0, created_at=T0, updated_at=T0, failures=0, renewals=0)
            for n, i in enumerate(ids)])
    total = writers * per_writer
    failures: list[BaseException] = []
    seen: list[list[tuple[int, str, int]]] = [[] for _ in range(readers)]

    def write(attempt_id: str, rng: random.Random) -> None:
        try:
            with db.connect() as conn:
                for seq in range(1, per_writer + 1):
                    with conn.begin():
                        if rng.random() < 0.5:
                            conn.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")  # the row early
                        conn.execute(history.insert(), history_row(attempt_id, seq))
                        time.sleep(rng.random() * 0.004)  # commits land in any order
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    def read(n: int) -> None:
        outbox = Outbox(db)
        after, deadline = 0, time.monotonic() + 60
        try:
            while len(seen[n]) < total and time.monotonic() < deadline:
                for event in outbox.read(after, 50):
                    seen[n].append((event.seq, event.attempt_id, event.history_seq))
                    after = event.seq
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i, random.Random(n))) for n, i in enumerate(ids)]
    threads += [threading.Thread(target=read, args=(n,)) for n in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    db.dispose()
    assert not failures, failures
    for got in seen:
        assert [position for position, _, _ in got] == list(range(1, total + 1))
        for attempt_id in ids:
            assert [h for _, a, h in got if a == attempt_id] == list(range(1, per_writer + 1))
    assert seen[0] == seen[1] == seen[2]

"""``Engine.find`` / ``Engine.count_matching``: every console filter as SQL, on both backends."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from testkit import QBO, QUICK_CONFIG

from engine import Engine, FakeClock
from persistence.attempt_filter import AttemptFilter
from persistence.quarantine import QUARANTINE_ERROR
from persistence.schema import attempts
from states.model import State


def test_views_search_and_keyset_paging_run_in_the_database(
        db_url: str, engine_on: Callable[..., Engine], clock: FakeClock, sandbox: object) -> None:
    engine = engine_on(db_url, clock=clock)
    old = engine.start("quickbooks", "Old Needle Co", flow="oauth2", customer="acme", **QBO)
    clock.advance(3600)
    waiting = [engine.start("quickbooks", f"Hay {i}", flow="oauth2", **QBO) for i in range(3)]
    parked = engine.start("quickbooks", "Parked", flow="quick", config=QUICK_CONFIG)
    with engine.repo.engine.begin() as conn:  # a quarantined row (secrets unreadable), and a retrying one
        conn.execute(attempts.update().where(attempts.c.id == parked.id)
                     .values(last_error=QUARANTINE_ERROR, next_run_at=None))
        conn.execute(attempts.update().where(attempts.c.id == waiting[0].id).values(failures=2))

    def ids(f: AttemptFilter) -> list[str]:
        found = [a.id for a in engine.find(f, limit=100)]
        assert engine.count_matching(f) == len(found)
        return found

    assert ids(AttemptFilter(customer="acme")) == [old.id]
    assert ids(AttemptFilter(name_part="NEEDLE")) == [old.id]  # case-insensitive
    assert ids(AttemptFilter(id_prefix=old.id[:8], name_part=old.id[:8])) == [old.id]
    assert ids(AttemptFilter(name_part="hay_")) == []  # LIKE wildcards are escaped ("_" is no "any")
    assert ids(AttemptFilter(view="retrying")) == [waiting[0].id]
    assert sorted(ids(AttemptFilter(view="attention"))) == sorted([waiting[0].id, parked.id])
    assert ids(AttemptFilter(created_before=clock() - timedelta(minutes=30))) == [old.id]
    assert ids(AttemptFilter(states=(State.NEW,), created_after=clock() - timedelta(minutes=30),
                             view="retrying")) == [waiting[0].id]
    every = ids(AttemptFilter())
    assert every[-1] == old.id and len(every) == 5
    pages, after = [], None
    while True:  # two at a time, by keyset: each attempt exactly once, in the same order
        page = engine.find(AttemptFilter(), after=after, limit=2)
        pages += [a.id for a in page]
        if len(page) < 2:
            break
        after = (page[-1].created_at, page[-1].id)
    assert pages == every

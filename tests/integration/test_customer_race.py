"""Starts racing for one customer: exactly one live attempt, the others ``DuplicateConnectionError``.

The guard's read (``engine.core.guard``) cannot see a start that has not committed yet; the
insert's transaction looks again, serialised between writers (``persistence.customer_guard``).
Real engines on SQLite files and PostgreSQL, several connection pools, threads released together.
"""
from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from testkit import QBO

from engine import Engine
from engine.errors import DuplicateConnectionError
from persistence.customer_guard import CustomersHeldError
from states import State

ROUNDS = 4
RACERS = 6


def _race(engines: list[Engine], customer: str) -> list[Any]:
    """``RACERS`` threads released together, half through ``start``, half through ``start_many``;
    what each got (an attempt, or the ``DuplicateConnectionError``)."""
    barrier = threading.Barrier(RACERS)
    results: list[Any] = []

    def race(n: int) -> None:
        engine = engines[n % len(engines)]
        item: dict[str, Any] = {"element": "quickbooks", "name": f"r{n}", "flow": "oauth2",
                                "customer": customer, **QBO}
        barrier.wait()
        try:
            results.append(engine.start(**item) if n % 2 else engine.start_many([item])[0])
        except DuplicateConnectionError as exc:
            results.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_racing_starts_for_one_customer_leave_one_live_attempt(make_engine: Callable[..., Engine]) -> None:
    engines = [make_engine() for _ in range(3)]  # three pools: the racers do not share a connection
    for round_ in range(ROUNDS):
        customer = f"racer-{round_}"
        results = _race(engines, customer)
        started = [r for r in results if not isinstance(r, DuplicateConnectionError)]
        refused = [r for r in results if isinstance(r, DuplicateConnectionError)]
        assert (len(started), len(refused)) == (1, RACERS - 1), results
        live = engines[0].list(customer=customer)
        assert [a.id for a in live] == [started[0].id]
        assert all(r.live_attempt_id == started[0].id for r in refused)


def test_the_insert_refuses_a_duplicate_the_read_did_not_see(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    first = engine.start("quickbooks", "first", flow="oauth2", customer="acme", **QBO)
    # What a racer that read before ``first`` committed would insert next (the read is skipped).
    dup = dataclasses.replace(first, id=str(uuid.uuid4()), idempotency_key=None)
    with pytest.raises(CustomersHeldError) as held:
        engine.repo.insert_attempts([dup])
    assert held.value.held == {dup.id: (first.id, "NEW")}
    assert [a.id for a in engine.list(customer="acme")] == [first.id]  # nothing stored
    # Not duplicates: another element, a replacement of the live one, or once it is no longer live.
    engine.repo.insert_attempts([dataclasses.replace(dup, element_key="xero")])
    replacing = dataclasses.replace(first, id=str(uuid.uuid4()), idempotency_key=None, replaces=first.id)
    assert engine.repo.insert_attempts([replacing])
    engine.cancel(first.id)
    engine.cancel(replacing.id)
    again = engine.start("quickbooks", "again", flow="oauth2", customer="acme", **QBO)
    assert again.state is State.NEW


def test_restart_does_not_revive_a_second_live_attempt_for_the_customer(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    old = engine.start("quickbooks", "old", flow="oauth2", customer="acme", **QBO)
    engine.cancel(old.id)
    new = engine.start("quickbooks", "new", flow="oauth2", customer="acme", **QBO)
    before = (engine.get(old.id), engine.history(old.id))
    with pytest.raises(DuplicateConnectionError) as refused:
        engine.restart(old.id, actor="ops")
    assert refused.value.live_attempt_id == new.id and "replace" in str(refused.value)
    assert (engine.get(old.id), engine.history(old.id)) == before  # nothing written
    engine.cancel(new.id)
    assert engine.restart(old.id).state is State.NEW  # no other live attempt: it may run again

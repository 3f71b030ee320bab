"""``engine.core.realm_claims`` without a database: what goes to the batch write, what each step asks."""
from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timezone
from typing import Any, cast

from fakes import make_attempt

from engine.core.realm_claims import RealmClaims
from persistence.repository import Repository
from states import Flow, State

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Repo:
    """Records the realm-claim calls; ``batch`` is what ``claim_free_realms`` answers (or raises)."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch
        self.batches: list[list[tuple[str, str, str]]] = []
        self.single: list[tuple[str, str]] = []

    def claim_free_realms(self, claims: list[tuple[str, str, str]], *, now: datetime) -> set[str]:
        self.batches.append(list(claims))
        if isinstance(self.batch, Exception):
            raise self.batch
        return {a for _, _, a in claims} & set(self.batch)

    def claim_realm(self, element_key: str, realm_id: str, attempt_id: str, **kw: Any) -> str | None:
        self.single.append((attempt_id, realm_id))
        return "holder"


_ids = itertools.count(1)


def called_back(realm: str | None, state: State = State.CALLBACK_RECEIVED) -> Any:
    """An attempt of its own id in ``state`` whose applied callback named ``realm``."""
    a = make_attempt(state, Flow.OAUTH2)
    callback = {"code": "c", **({"realmId": realm} if realm else {})}
    return dataclasses.replace(a, id=f"att-{next(_ids)}", secrets={**a.secrets, "callback": callback})


def claims(repo: Repo) -> RealmClaims:
    return RealmClaims(cast(Repository, repo), clock=lambda: NOW)


def test_only_callback_steps_naming_a_realm_go_to_the_batch_write() -> None:
    a, b = called_back("r1"), called_back("r2")
    others = [called_back(None), called_back("r3", State.REDIRECTED)]
    repo = Repo({a.id})
    realms = claims(repo)
    realms.prepare([a, *others, b])
    assert repo.batches == [[("quickbooks", "r1", a.id), ("quickbooks", "r2", b.id)]]
    assert realms.claim(a, "r1") is None and repo.single == []  # claimed in the batch: no write
    assert realms.claim(b, "r2") == "holder" and repo.single == [(b.id, "r2")]  # not: its own claim


def test_a_single_callback_step_claims_on_its_own() -> None:
    repo = Repo(set())
    realms = claims(repo)
    realms.prepare([called_back("r1")])
    assert repo.batches == []


def test_a_failed_batch_write_leaves_each_step_to_claim_its_own() -> None:
    a, b = called_back("r1"), called_back("r2")
    repo = Repo(RuntimeError("database is locked"))
    realms = claims(repo)
    realms.prepare([a, b])
    assert realms.claim(a, "r1") == "holder" and repo.single == [(a.id, "r1")]


def test_nothing_claimed_in_an_earlier_tick_is_trusted_later() -> None:
    a, b = called_back("r1"), called_back("r2")
    repo = Repo({a.id, b.id})
    realms = claims(repo)
    realms.prepare([a, b])
    realms.prepare([called_back("r3"), called_back("r4")])  # the next tick
    assert realms.claim(a, "r1") == "holder"  # judged again by the race-safe claim

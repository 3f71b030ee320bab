"""The realm guard at start (issue 10/12 must-have 3): a quick start naming a QuickBooks company
(``quickbooks.realm.id``) that a live attempt connects is refused synchronously, naming the live
attempt and ``replace``, with nothing stored; ``replace=True`` takes the company over; ``start_many``
refuses the whole batch naming each item; two starts racing for one company leave one attempt.
Real engine, real sandbox over HTTP, SQLite and PostgreSQL."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from testkit import QBO, QUICK_CONFIG, TEST_KEY, quick_config

from engine import Engine
from engine.core.realm_start import DuplicateRealmError
from engine.errors import DuplicateConnectionError, InvalidInputError
from persistence.schema import attempts, events, realm_claims
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))
REALM = QUICK_CONFIG["quickbooks.realm.id"]


def rows(engine: Engine) -> tuple[int, int, int]:
    """How many attempts, events and realm claims the database holds."""
    with engine.repo.engine.connect() as conn:
        n_attempts, n_events, n_claims = (
            int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in (attempts, events, realm_claims))
    return n_attempts, n_events, n_claims


def quick(engine: Engine, name: str, config: dict[str, str] | None = None, **kw: Any) -> str:
    a = engine.start("quickbooks", name, flow="quick", config=config or QUICK_CONFIG, **kw)
    return a.id


def test_a_quick_start_naming_a_connected_company_is_refused_at_start(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    realm = sandbox.store.new_realm("sandbox")  # a company the sandbox's consent page lists too
    config = {**QUICK_CONFIG, "quickbooks.realm.id": realm}
    live = quick(engine, "acme books", config, customer="acme-42")
    engine.run_until_idle()
    assert engine.get(live).state is State.PROVISIONED and engine.get(live).realm_id == realm
    before = rows(engine)
    for customer in ("globex-7", None, "acme-42"):  # another customer, none, the same (customer guard first)
        with pytest.raises(DuplicateConnectionError) as exc:
            quick(engine, "second books", config, customer=customer)
        assert live in str(exc.value) and "replace" in (exc.value.hint or "")
        assert exc.value.live_attempt_id == live
    with pytest.raises(DuplicateRealmError) as realm_exc:
        quick(engine, "refused again", config, customer="globex-7")
    assert realm_exc.value.field == "config" and realm in str(realm_exc.value)
    assert rows(engine) == before  # nothing stored: no attempt, no event, no claim
    # A consent flow naming the quick attempt's company is refused at callback time, too.
    other = engine.start("quickbooks", "oauth2 books", flow="oauth2", customer="initech-1", **QBO)
    engine.run_until_idle()
    page = engine.redirect_url(engine.get(other.id)) or ""
    resp = requests.post(page, data={"decision": "approve", "company": "sandbox", "realm": realm},
                         allow_redirects=False, timeout=5)
    engine.handle_callback(resp.headers["Location"])
    engine.run_until_idle()
    assert (engine.get(other.id).state, engine.get(other.id).failure_reason) == (
        State.FAILED, "duplicate_connection")
    # Once the live one is disconnected, the company may be connected again; its claim moves.
    engine.disconnect(live)
    engine.run_until_idle()
    again = quick(engine, "acme again", config, customer="acme-42")
    engine.run_until_idle()
    assert engine.get(again).state is State.PROVISIONED
    assert engine.repo.realm_holder("quickbooks", realm) == again


def test_replace_takes_the_company_over_and_disconnects_the_old_attempt(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    old = quick(engine, "acme books")  # no customer: only the realm ties the two together
    engine.run_until_idle()
    # The user's new tokens for the same company (the old ones are revoked when the old is disconnected).
    fresh = {**QUICK_CONFIG, "oauth.user.token": "qyprd-new-token", "oauth.user.token.secret": "new-secret"}
    new = quick(engine, "acme books again", fresh, replace=True)
    assert engine.get(new).replaces == old and engine.repo.realm_holder("quickbooks", REALM) == new
    engine.run_until_idle()
    assert engine.get(new).state is State.PROVISIONED and engine.get(old).state is State.DISCONNECTED
    # The customer's live attempt is one, the company's holder another: one start replaces one attempt.
    mine = quick(engine, "initech books", quick_config(), customer="initech-1")
    with pytest.raises(DuplicateRealmError) as exc:
        quick(engine, "initech on acme's company", fresh, customer="initech-1", replace=True)
    assert exc.value.live_attempt_id == new and mine != new


def test_a_restarted_quick_attempt_does_not_wipe_the_one_that_took_its_company_over(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    gone = quick(engine, "cancelled before it ran")
    engine.cancel(gone)  # FAILED: its claim is stale
    taken = quick(engine, "took the company over")
    engine.run_until_idle()
    assert engine.get(taken).state is State.PROVISIONED
    assert engine.repo.realm_holder("quickbooks", REALM) == taken
    engine.restart(gone)  # the operator retries the old one
    engine.run_until_idle()
    again = engine.get(gone)
    assert (again.state, again.failure_reason, again.instance_id) == (
        State.FAILED, "duplicate_connection", None)
    assert again.last_error is not None and again.last_error["live_attempt"] == taken
    with sandbox.store.lock:
        assert [i for i, inst in sandbox.store.instances.items() if inst.realm_id == REALM] == [
            int(engine.get(taken).instance_id or 0)]


def test_start_many_refuses_the_whole_batch_naming_each_conflicting_item(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    live = quick(engine, "acme books", customer="acme-42")
    before = rows(engine)
    own = quick_config()
    items = [{"element": "quickbooks", "name": f"item {i}", "flow": "quick", "config": c}
             for i, c in enumerate([quick_config(), QUICK_CONFIG, own, own])]
    with pytest.raises(DuplicateRealmError) as exc:
        engine.start_many(items)
    assert exc.value.conflicts == [("items[3].config", "items[2]")]  # in-batch duplicates first
    items[3]["config"] = quick_config()
    with pytest.raises(DuplicateRealmError) as exc:
        engine.start_many(items)
    assert exc.value.conflicts == [("items[1].config", live)] and "items[1].config" in str(exc.value)
    assert rows(engine) == before
    # The same idempotency key twice is one attempt, not a duplicate; a repeated call returns it.
    items[1]["config"] = quick_config()
    keyed = [*items, {**items[0], "idempotency_key": "k-1"}, {**items[0], "idempotency_key": "k-1"}]
    keyed[4]["config"] = keyed[5]["config"] = quick_config()
    first = engine.start_many(keyed)
    assert first[4].id == first[5].id and [a.id for a in engine.start_many(keyed[4:])] == [first[4].id] * 2
    assert rows(engine)[0] == before[0] + 5


def test_a_bad_realm_id_is_refused_before_anything_is_stored(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(InvalidInputError) as exc:
        quick(engine, "bad", {**QUICK_CONFIG, "quickbooks.realm.id": "1" * 65})
    assert exc.value.field == "config" and "quickbooks.realm.id" in str(exc.value)
    assert rows(engine) == (0, 0, 0)


def test_quick_starts_racing_for_one_company_leave_one_attempt(
        db_url: str, engine_on: Callable[..., Engine]) -> None:
    engines = [engine_on(db_url), engine_on(db_url)]

    def start(engine: Engine, name: str, config: dict[str, str], barrier: threading.Barrier,
              outcomes: list[str]) -> None:
        barrier.wait(10)
        try:
            outcomes.append(quick(engine, name, config))
        except DuplicateRealmError as exc:
            outcomes.append(f"refused by {exc.live_attempt_id}")

    for round_ in range(8):
        config, barrier = quick_config(), threading.Barrier(2)
        outcomes: list[str] = []
        threads = [threading.Thread(target=start, args=(e, f"race {round_}.{i}", config, barrier, outcomes))
                   for i, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [o for o in outcomes if not o.startswith("refused")]
        assert len(outcomes) == 2 and len(winners) == 1, outcomes
        assert f"refused by {winners[0]}" in outcomes
        assert engines[0].repo.realm_holder("quickbooks", config["quickbooks.realm.id"]) == winners[0]
    assert rows(engines[0])[0] == 8


def test_cli_start_refuses_a_connected_company_with_exit_2_and_replace_works(sqlite_url: str) -> None:
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "PATH": str(Path(sys.executable).parent)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PROVISION, *args], capture_output=True, text=True, env=env, timeout=60)

    config = [arg for k, v in QUICK_CONFIG.items() for arg in ("--config", f"{k}={v}")]
    # --offline: no platform runs here, and the element check at start would need one.
    start = ("start", "--element", "quickbooks", "--flow", "quick", "--offline", *config)
    first = cli(*start, "--name", "acme books")
    assert first.returncode == 0, first.stderr
    again = cli(*start, "--name", "globex books", "--customer", "globex-7")
    assert again.returncode == 2, again.stderr
    assert first.stdout.strip() in again.stderr and "--replace" in again.stderr
    assert "user-token-secret" not in again.stderr + again.stdout  # the config's secrets stay out
    replaced = cli(*start, "--name", "globex books", "--customer", "globex-7", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    shown = cli("show", replaced.stdout.strip())
    assert any(line.split() == ["realm_id", REALM] for line in shown.stdout.splitlines())
    listed = cli("list", "--element", "quickbooks")  # both live: the old one until the new is PROVISIONED
    assert first.stdout.strip() in listed.stdout and replaced.stdout.strip() in listed.stdout

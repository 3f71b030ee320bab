"""The realmId duplicate guard at callback time (issue 10/12 must-have 3, last bullet), against the
real sandbox over HTTP on SQLite and PostgreSQL: a callback naming a QuickBooks company that another
live attempt already connected fails before any instance is created, names the live attempt, emits
``attempt.failed`` and shows the customer an honest page; ``--replace`` takes the realm over; two
workers racing for one realm leave exactly one instance."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from testkit import QBO, in_background

from engine import Engine
from engine.cli.output import attempt_dict, format_attempt
from engine.config import Branding
from engine.core import events as ev
from engine.web.callback_app import make_app, serve
from states import State


def consent_with(url: str, realm: str | None = None) -> str:
    """Approve on the sandbox consent page, picking the existing company ``realm`` if given."""
    form = {"decision": "approve", "company": "sandbox", **({"realm": realm} if realm else {})}
    resp = requests.post(url, data=form, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def redirected(engine: Engine, name: str, customer: str | None = None, flow: str = "oauth2",
               **kw: Any) -> str:
    a = engine.start("quickbooks", name, flow=flow, customer=customer, **QBO, **kw)
    engine.run_until_idle()
    assert engine.get(a.id).state is State.REDIRECTED
    return a.id


def called_back(engine: Engine, attempt_id: str, realm: str | None = None) -> None:
    outcome = engine.handle_callback(consent_with(engine.redirect_url(engine.get(attempt_id)) or "", realm))
    assert outcome.status == "applied" and outcome.attempt_id == attempt_id


def connected(engine: Engine, sandbox: Any, customer: str) -> tuple[str, str]:
    """A PROVISIONED attempt of ``customer`` on a new company: (attempt id, its realmId)."""
    attempt_id = redirected(engine, f"books of {customer}", customer)
    called_back(engine, attempt_id)
    engine.run_until_idle()
    realm = engine.get(attempt_id).realm_id
    assert engine.get(attempt_id).state is State.PROVISIONED and realm and instances_of(sandbox, realm)
    return attempt_id, realm


def instances_of(sandbox: Any, realm: str) -> list[int]:
    with sandbox.store.lock:
        return [i for i, inst in sandbox.store.instances.items() if inst.realm_id == realm]


def test_a_callback_for_a_connected_realm_is_refused_naming_the_live_attempt(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    live, realm = connected(engine, sandbox, "acme-42")
    # Another customer (and one without any customer id) consents to the very same company.
    for customer in ("globex-7", None):
        second = redirected(engine, f"books of {customer}", customer)
        called_back(engine, second, realm)
        engine.run_until_idle()
        refused = engine.get(second)
        assert refused.state is State.FAILED and refused.failure_reason == "duplicate_connection"
        assert refused.instance_id is None and refused.realm_id == realm
        assert refused.last_error is not None and refused.last_error["live_attempt"] == live
        assert live in refused.last_error["message"] and live in refused.last_error["hint"]
        assert len(instances_of(sandbox, realm)) == 1  # no second platform instance
        failed = [e for e in engine.events(limit=500) if e.attempt_id == second and e.type == ev.FAILED]
        assert len(failed) == 1 and failed[0].data["reason"] == "duplicate_connection"
        assert live in (failed[0].data["hint"] or "")
    assert engine.get(live).state is State.PROVISIONED  # the live connection is untouched
    shown = engine.get(live)  # `show` and `show --json` print the realm (not a secret)
    assert attempt_dict(shown, [], None)["realm_id"] == realm
    assert ["realm_id", realm] in [line.split() for line in format_attempt(shown, [], None).splitlines()]
    # Once the live one is disconnected, the company may be connected again.
    engine.disconnect(live)
    engine.run_until_idle()
    again = redirected(engine, "acme again", "acme-42")
    called_back(engine, again, realm)
    engine.run_until_idle()
    assert engine.get(again).state is State.PROVISIONED and engine.get(again).realm_id == realm
    assert engine.repo.realm_holder("quickbooks", realm) == again


def test_an_oauth1_callback_naming_a_connected_realm_is_refused_too(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    live, realm = connected(engine, sandbox, "acme-42")  # OAuth2
    second = redirected(engine, "globex books", "globex-7", flow="oauth1")
    called_back(engine, second, realm)  # Intuit's OAuth1 redirect carries realmId as well
    engine.run_until_idle()
    refused = engine.get(second)
    assert (refused.state, refused.failure_reason, refused.realm_id) == (
        State.FAILED, "duplicate_connection", realm)
    assert refused.last_error is not None and refused.last_error["live_attempt"] == live
    assert len(instances_of(sandbox, realm)) == 1


def test_replace_takes_the_realm_over_and_disconnects_the_old_attempt_once_provisioned(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    old, realm = connected(engine, sandbox, "acme-42")
    (old_instance,) = instances_of(sandbox, realm)
    new = redirected(engine, "acme books again", "acme-42", replace=True)
    assert engine.get(new).replaces == old and engine.get(old).state is State.PROVISIONED
    called_back(engine, new, realm)
    engine.run_until_idle()
    assert engine.get(new).state is State.PROVISIONED and engine.get(new).realm_id == realm
    assert engine.get(old).state is State.DISCONNECTED
    assert instances_of(sandbox, realm) == [int(engine.get(new).instance_id or 0)] != [old_instance]
    assert engine.repo.realm_holder("quickbooks", realm) == new


def test_two_workers_racing_for_one_realm_leave_one_instance(
        db_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    workers = [engine_on(db_url), engine_on(db_url)]
    realm = sandbox.store.new_realm("sandbox")  # the user's company, picked on both consent pages
    ids = [redirected(w, f"books {i}", f"customer-{i}") for i, w in enumerate(workers)]
    for w, attempt_id in zip(workers, ids, strict=True):
        called_back(w, attempt_id, realm)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(engine: Engine) -> None:
        try:
            barrier.wait(10)
            engine.run_until_idle()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    final = {a: workers[0].get(a) for a in ids}
    states = sorted(a.state.value for a in final.values())
    assert states == ["FAILED", "PROVISIONED"]
    winner = next(a for a in final.values() if a.state is State.PROVISIONED)
    loser = next(a for a in final.values() if a.state is State.FAILED)
    assert loser.failure_reason == "duplicate_connection" and loser.last_error is not None
    assert loser.last_error["live_attempt"] == winner.id
    assert instances_of(sandbox, realm) == [int(winner.instance_id or 0)]


@pytest.fixture
def receiver(sqlite_url: str, engine_on: Callable[..., Engine]) -> Iterator[tuple[Engine, str]]:
    """``provision serve``'s server function, branded, on a free loopback port."""
    engine = engine_on(sqlite_url)
    app = make_app(engine, branding=Branding(name="Ledgerly", support="help@ledgerly.example"))
    with in_background(serve, engine, "127.0.0.1", 0, app=app) as url:
        yield engine, url


def test_the_customer_is_told_the_company_is_already_connected(receiver: tuple[Engine, str]) -> None:
    engine, base = receiver
    live = redirected(engine, "acme books", "acme-42")
    called_back(engine, live)
    engine.run_until_idle()
    second = redirected(engine, "globex books", "globex-7")
    location = consent_with(engine.redirect_url(engine.get(second)) or "", engine.get(live).realm_id)
    # The browser follows the provider's redirect to our receiver, then to its progress page.
    page = requests.get(f"{base}/callback?{urlsplit(location).query}", timeout=5)
    assert page.status_code == 200 and "Connecting..." in page.text
    engine.run_until_idle()
    page = requests.get(page.url, timeout=5)
    assert "This QuickBooks company is already connected to Ledgerly" in page.text
    assert 'href="mailto:help@ledgerly.example"' in page.text
    for internal in ("duplicate_connection", live, second, "FAILED", "realm"):
        assert internal not in page.text


def test_concurrent_claims_of_one_realm_let_exactly_one_attempt_in(
        db_url: str, engine_on: Callable[..., Engine]) -> None:
    """The statement itself, raced from two connections pools at once, round after round."""
    workers = [engine_on(db_url), engine_on(db_url)]
    not_live = frozenset({"FAILED", "DISCONNECTED"})

    def claim(engine: Engine, attempt_id: str, realm: str, barrier: threading.Barrier,
              answers: dict[str, str | None]) -> None:
        barrier.wait(10)
        answers[attempt_id] = engine.repo.claim_realm("quickbooks", realm, attempt_id, replaces=None,
                                                      not_live=not_live, now=engine.now())

    for round_no in range(15):
        ids = [w.start("quickbooks", f"race {round_no}.{i}", flow="oauth2", **QBO).id
               for i, w in enumerate(workers)]
        realm, barrier = f"realm-{round_no}", threading.Barrier(2)
        answers: dict[str, str | None] = {}
        threads = [threading.Thread(target=claim, args=(w, i, realm, barrier, answers))
                   for w, i in zip(workers, ids, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [i for i in ids if answers.get(i, "missing") is None]
        assert len(winners) == 1, answers
        loser = next(i for i in ids if i not in winners)
        assert answers[loser] == winners[0]
        assert workers[0].repo.realm_holder("quickbooks", realm) == winners[0]


def test_a_tick_claims_its_free_realms_in_one_write_and_still_refuses_a_second_claimer(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    """``engine.core.realm_claims``: the callback steps of one batch claim their free realms with one
    INSERT; of two attempts of that batch naming one company, one connects, the other is refused."""
    engine = make_engine()
    ids = [redirected(engine, f"batch {i}", f"cust-{i}") for i in range(4)]
    first = consent_with(engine.redirect_url(engine.get(ids[0])) or "")
    realm = parse_qs(urlsplit(first).query)["realmId"][0]
    locations = [first, consent_with(engine.redirect_url(engine.get(ids[1])) or "", realm),
                 *(consent_with(engine.redirect_url(engine.get(i)) or "") for i in ids[2:])]
    for location in locations:
        assert engine.handle_callback(location).status == "applied"
    claims: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REALM_CLAIMS"):
            claims.append(statement)

    sa.event.listen(engine.repo.engine, "before_cursor_execute", count)
    try:
        engine.run_until_idle()
    finally:
        sa.event.remove(engine.repo.engine, "before_cursor_execute", count)
    states = {i: engine.get(i) for i in ids}
    winner, loser = sorted(ids[:2], key=lambda i: states[i].state is not State.PROVISIONED)
    assert states[winner].state is State.PROVISIONED and states[winner].realm_id == realm
    assert states[loser].state is State.FAILED and states[loser].failure_reason == "duplicate_connection"
    refusal = states[loser].last_error
    assert refusal is not None and refusal["live_attempt"] == winner
    assert all(states[i].state is State.PROVISIONED for i in ids[2:])
    assert len(instances_of(sandbox, realm)) == 1
    assert engine.repo.realm_holder("quickbooks", realm) == winner
    # One INSERT for the batch's three free realms, and the refused step's own (it found the claim).
    assert len(claims) == 2, claims

"""Customers and the duplicate-connection guard (issue 10/12 must-have 3), against the real sandbox
over HTTP on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import QBO, TEST_KEY, connected, consent

from engine import Engine
from engine.core import events as ev
from engine.errors import DuplicateConnectionError, InvalidInputError
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))



@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "acme\n42", "acme\u202e42", "tab\there", 42])
def test_customer_is_validated_before_anything_is_stored(make_engine: Callable[..., Engine],
                                                         bad: Any) -> None:
    engine = make_engine()
    with pytest.raises(InvalidInputError) as exc:
        engine.start("quickbooks", "n", flow="oauth2", customer=bad, **QBO)
    assert exc.value.field == "customer" and "printable" in str(exc.value)
    with pytest.raises(InvalidInputError, match="items\\[0\\].customer"):
        engine.start_many([{"element": "quickbooks", "name": "n", "flow": "oauth2", "customer": bad, **QBO}])
    with pytest.raises(InvalidInputError, match="customer"):
        engine.list(customer=bad)
    assert engine.list() == []


def test_customer_is_stored_filterable_and_carried_in_every_event(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    first = connected(engine, "acme-42", name="books of acme-42")
    other = engine.start("quickbooks", "other", flow="oauth2", customer="globex-7", **QBO)
    anonymous = engine.start("quickbooks", "no customer", flow="oauth2", **QBO)
    assert engine.get(first).customer == "acme-42"
    assert [a.id for a in engine.list(customer="acme-42")] == [first]
    assert [a.id for a in engine.list(customer="globex-7")] == [other.id]
    assert engine.list(customer="nobody") == []
    engine.run_until_idle()
    feed = engine.events(limit=100)
    mine = [e for e in feed if e.attempt_id == first]
    assert [e.type for e in mine] == [ev.REDIRECTED, ev.CALLBACK_RECEIVED, ev.PROVISIONED]
    assert all(e.data["customer"] == "acme-42" for e in mine)
    assert all(e.payload["data"]["customer"] is None for e in feed if e.attempt_id == anonymous.id)


def test_a_second_live_attempt_for_the_customer_is_refused_and_names_the_live_one(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    live = engine.start("quickbooks", "first", flow="oauth2", customer="acme-42", **QBO)
    with pytest.raises(DuplicateConnectionError) as exc:
        engine.start("quickbooks", "second", flow="oauth2", customer="acme-42", **QBO)
    assert live.id in str(exc.value) and "NEW" in str(exc.value) and "replace=True" in (exc.value.hint or "")
    assert isinstance(exc.value, InvalidInputError) and exc.value.live_attempt_id == live.id
    # Also once it is PROVISIONED, and from start_many; another element or customer is fine.
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(live.id)) or ""))
    engine.run_until_idle()
    with pytest.raises(DuplicateConnectionError, match=live.id):
        engine.start_many([{"element": "quickbooks", "name": "again", "flow": "oauth2",
                            "customer": "acme-42", **QBO}])
    with pytest.raises(DuplicateConnectionError, match="items\\[0\\]"):
        engine.start_many([{"element": "quickbooks", "name": f"n{i}", "flow": "oauth2",
                            "customer": "initech", **QBO} for i in range(2)])
    assert engine.list(customer="initech") == []  # all or none
    engine.start("quickbooks", "other customer", flow="oauth2", customer="acme-43", **QBO)
    # The same idempotency key returns the stored attempt instead of refusing it.
    keyed = engine.start("quickbooks", "keyed", flow="oauth2", customer="keyed", idempotency_key="k1", **QBO)
    assert engine.start("quickbooks", "keyed", flow="oauth2", customer="keyed", idempotency_key="k1",
                        **QBO).id == keyed.id
    # replace=True starts it; a FAILED attempt does not block.
    replacement = engine.start("quickbooks", "second", flow="oauth2", customer="acme-42", replace=True, **QBO)
    assert {a.id for a in engine.list(customer="acme-42")} == {live.id, replacement.id}
    engine.cancel(replacement.id)
    engine.cancel(engine.start("quickbooks", "x", flow="oauth2", customer="gone", **QBO).id)
    assert engine.start("quickbooks", "y", flow="oauth2", customer="gone", **QBO).state is State.NEW


def test_cli_customer_replace_list_and_show(sqlite_url: str, tmp_path: Path) -> None:
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "PATH": str(Path(sys.executable).parent)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PROVISION, *args], capture_output=True, text=True, env=env, timeout=60)

    # No platform runs here: --offline skips the element check (tests/cli/test_cli_start_checks.py).
    start = ("start", "--offline", "--element", "quickbooks", "--name", "books", "--flow", "oauth2",
             "--api-key", "k", "--api-secret", "s", "--callback-url", "https://app.example.com/cb",
             "--customer", "acme-42")
    first = cli(*start)
    assert first.returncode == 0, first.stderr
    again = cli(*start)
    assert again.returncode == 2 and first.stdout.strip() in again.stderr and "--replace" in again.stderr
    replaced = cli(*start, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    bad = cli(*start[:-1], "acme\u202e42")
    assert bad.returncode == 2 and "customer" in bad.stderr
    listed = json.loads(cli("list", "--customer", "acme-42", "--json").stdout)
    assert {a["id"] for a in listed["attempts"]} == {first.stdout.strip(), replaced.stdout.strip()}
    assert all(a["customer"] == "acme-42" for a in listed["attempts"])
    assert json.loads(cli("list", "--customer", "other", "--json").stdout)["attempts"] == []
    shown = cli("show", first.stdout.strip())
    assert any(line.split() == ["customer", "acme-42"] for line in shown.stdout.splitlines())
    assert json.loads(cli("show", first.stdout.strip(), "--json").stdout)["customer"] == "acme-42"


def test_replace_disconnects_the_old_attempt_once_the_new_one_is_provisioned(
        make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    old = connected(engine, "acme-42", name="books of acme-42")
    old_instance = engine.get(old).instance_id
    new = engine.start("quickbooks", "books again", flow="oauth2", customer="acme-42", replace=True, **QBO)
    assert new.replaces == old
    engine.run_until_idle()
    assert engine.get(old).state is State.PROVISIONED  # not before the new one is connected
    engine.handle_callback(consent(engine.redirect_url(engine.get(new.id)) or ""))
    engine.run_until_idle()
    assert engine.get(new.id).state is State.PROVISIONED
    assert engine.get(old).state is State.DISCONNECTED
    assert int(old_instance or 0) not in sandbox.store.instances
    assert int(engine.get(new.id).instance_id or 0) in sandbox.store.instances
    # An old attempt still onboarding is cancelled first, then disconnected.
    waiting = engine.start("quickbooks", "w", flow="oauth2", customer="initech", **QBO)
    engine.run_until_idle()
    replacement = connected(engine, "initech", name="books of initech", replace=True)
    assert engine.get(replacement).replaces == waiting.id
    assert [h.trigger for h in engine.history(waiting.id)][-3:] == ["fail", "disconnect", "remove"]

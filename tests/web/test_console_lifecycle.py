"""The console and the connection lifecycle (issue 10/12): the customer filter, unhealthy
connections under "needs attention", the customer and health facts, and the confirmed disconnect
action. A real engine against the sandbox over HTTP, through werkzeug's test client."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from testkit import quick_config
from werkzeug.test import Client

from engine import Engine
from states import State

ConsoleFor = Callable[..., Client]
Csrf = Callable[[str], str]
ID_LINK = re.compile(r'<a href="/attempts/([0-9a-f-]{36})">')
# The simulator on the engine's fake clock: quick tokens carry the engine's ``refresh_time``, and the
# provider check (issue 10/12) judges their age by the sandbox's time, so a real-time sandbox would
# find a token granted on the fake clock's date expired once the real date is 180 days past it.
pytestmark = [pytest.mark.sandbox_on_clock]


def listed(client: Client, url: str) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return set(ID_LINK.findall(response.get_data(as_text=True).split('<div id="live"', 1)[1]))


def test_customer_filter_unhealthy_attention_and_disconnect(
        web_engine: Engine, console_for: ConsoleFor, csrf: Csrf, sandbox: Any) -> None:
    client = console_for(web_engine)
    acme = web_engine.start("quickbooks", "Acme", flow="quick", config=quick_config(), customer="acme-42")
    globex = web_engine.start("quickbooks", "Globex", flow="quick", config=quick_config(),
                              customer="globex-7")
    web_engine.run_until_idle()
    assert listed(client, "/?customer=acme-42") == {acme.id}
    form = client.get("/?customer=acme-42").get_data(as_text=True)
    assert 'name="customer" id="f-customer" value="acme-42"' in form
    assert listed(client, "/?view=unhealthy") == set() and acme.id not in listed(client, "/?view=attention")
    instance = web_engine.get(acme.id).instance_id
    flipped = requests.post(f"{sandbox.root_url}/_sandbox/instances/{instance}/status",
                            json={"disabled": True}, timeout=5)
    assert flipped.status_code == 200
    web_engine.check(acme.id)
    web_engine.check(globex.id)
    assert listed(client, "/?view=unhealthy") == {acme.id}
    attention = listed(client, "/?view=attention")
    assert acme.id in attention and globex.id not in attention
    page = client.get(f"/attempts/{acme.id}").get_data(as_text=True)
    assert "acme-42" in page and "unhealthy (instance_disabled)" in page
    assert f'href="/attempts/{acme.id}/disconnect"' in page
    confirm = client.get(f"/attempts/{acme.id}/disconnect").get_data(as_text=True)
    assert f"instance {instance} is DELETED" in confirm
    assert web_engine.get(acme.id).state is State.PROVISIONED  # asking changed nothing
    assert client.post(f"/attempts/{acme.id}/disconnect", data={"csrf": csrf(confirm)}).status_code == 303
    web_engine.run_until_idle()
    done = web_engine.get(acme.id)
    assert done.state is State.DISCONNECTED
    assert [(h.trigger, h.note) for h in web_engine.history(acme.id)][-2:] == [
        ("disconnect", "operator:local"), ("remove", "instance deleted")]
    assert f'href="/attempts/{acme.id}/disconnect"' not in client.get(f"/attempts/{acme.id}").get_data(
        as_text=True)

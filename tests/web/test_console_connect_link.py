"""The console's "copy connect link" action (issue 18 must-have 2, issue 10/12 must-have 6) in a real
headless Chromium over real HTTP: on a REDIRECTED attempt an operator confirms, gets a fresh single-use
connect link with a copy-to-clipboard button, and the history records who made it. Following the link
leads to the consent page; a second use gets the honest "no longer valid" page. The console and the
public receiver are two engines on one SQLite file, as two processes would be. Screenshots go to
``tests/artifacts/``."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_console_browser import ARTIFACTS, TOKEN, browser  # noqa: F401 - browser is a fixture
from testkit import QBO, in_background

from engine import Engine, FakeClock
from engine.config import ConsoleSettings, EngineSettings
from engine.core import events as ev
from engine.web.callback_app import make_app, serve
from engine.web.console import serve_console
from states import State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]


@pytest.fixture
def receiver_url(web_engine: Engine) -> Iterator[str]:
    """``provision serve``'s server function on a free loopback port."""
    with in_background(serve, web_engine, "127.0.0.1", 0, app=make_app(web_engine)) as url:
        yield url


@pytest.fixture
def operator_engine(sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock,
                    receiver_url: str) -> Engine:
    """The console's engine: same database, ``PROVISION_PUBLIC_URL`` = the receiver."""
    return engine_on(sqlite_url, clock=clock, settings=EngineSettings(public_url=receiver_url))


@pytest.fixture
def console_url(operator_engine: Engine) -> Iterator[str]:
    with in_background(serve_console, operator_engine, "127.0.0.1", 0,
                       settings=ConsoleSettings(token=TOKEN)) as url:
        yield url


def test_operator_copies_a_single_use_connect_link_that_leads_to_consent_once(
        browser: Any, operator_engine: Engine, console_url: str, receiver_url: str) -> None:  # noqa: F811
    engine = operator_engine
    a = engine.start("quickbooks", "Link Customer", flow="oauth2", customer="acme-42", **QBO)
    engine.run_until_idle()
    assert engine.get(a.id).state is State.REDIRECTED
    consent_url = engine.redirect_url(engine.get(a.id)) or ""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_url)
    page = context.new_page()
    page.goto(f"{console_url}/login")
    page.get_by_label("Your name").fill("alice")
    page.get_by_label("Token or password").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console_url}/")

    page.goto(f"{console_url}/attempts/{a.id}")
    page.get_by_role("link", name="Copy connect link...").click()
    assert "single-use connect link" in page.inner_text("main")  # the confirmation says what happens
    assert len(engine.history(a.id)) == 1  # nothing done before the confirmation
    page.get_by_role("button", name="Yes, copy connect link").click()
    field = page.get_by_label("Connect link")
    link = field.input_value()
    assert link.startswith(f"{receiver_url}/connect/") and len(link.rsplit("/", 1)[1]) == 43
    page.get_by_role("button", name="Copy to clipboard").click()
    page.locator("#copy-status", has_text="Copied.").wait_for(timeout=5_000)
    assert page.evaluate("navigator.clipboard.readText()") == link
    page.screenshot(path=str(ARTIFACTS / "console-connect-link.png"))

    last = engine.history(a.id)[-1]
    assert (last.trigger, last.source, last.dest, last.note) == (
        "connect_link", "REDIRECTED", "REDIRECTED", "operator:alice")
    made = [e for e in engine.events(limit=100) if e.attempt_id == a.id and e.type == ev.CONNECT_LINK]
    assert len(made) == 1 and link.rsplit("/", 1)[1] not in str(made[0].payload)
    refused = page.request.post(f"{console_url}/attempts/{a.id}/connect-link", form={})  # no CSRF token
    assert refused.status == 403 and len(engine.history(a.id)) == 2

    customer = browser.new_context().new_page()  # the customer's browser follows the link
    customer.goto(link)
    assert customer.url == consent_url
    assert customer.get_by_role("button", name="Approve").count() == 1
    again = customer.goto(link)
    assert again is not None and again.status == 410
    assert customer.get_by_role("heading", level=1).inner_text() == "This link is no longer valid"
    assert a.id not in customer.inner_text("body")
    customer.screenshot(path=str(ARTIFACTS / "customer-connect-link-used.png"))

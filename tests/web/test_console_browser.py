"""End to end in a real headless Chromium (Playwright, the system's Chromium), over real HTTP: the
operator console and the customer pages against the sandbox and a SQLite file.

An operator signs in, filters, opens an attempt, restarts 40 FAILED attempts in one bulk action after
a dry run, and watches them complete (live refresh, no reload) after a worker runs; a POST without the
CSRF token is refused; every page needs the login. A customer on a phone sees "Connecting...", then
"Connected", and a forged link gets a plain page. Screenshots go to ``tests/artifacts/`` (git-ignored).

Outside CI the tests skip when Playwright or Chromium is missing; in CI (``CI=true``) they fail.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from testkit import QBO, consent, in_background, quick_config

from engine import Engine
from engine.config import Branding, ConsoleSettings
from engine.web.callback_app import make_app, serve
from engine.web.console import serve_console
from states import State

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "browser-test-console-token"
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.realtime]


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI (.ci/run installs chromium; setup.cfg's test extra playwright)")
    pytest.skip(f"{what} is not installed; CI runs this test")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright (no browser download: the system's Chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package (pip install '.[test]')")
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        _missing("chromium (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


def _background(run: Callable[..., None], *args: Any, **kw: Any) -> Iterator[str]:
    """Run a blocking ``serve``-style function in a thread; yields its base URL; stops it after."""
    with in_background(run, *args, **kw) as url:
        yield url


@pytest.fixture
def console_url(web_engine: Engine) -> Iterator[str]:
    """``provision console``'s server function on a free loopback port, with a token login."""
    yield from _background(serve_console, web_engine, "127.0.0.1", 0, settings=ConsoleSettings(token=TOKEN))


@pytest.fixture
def receiver_url(web_engine: Engine) -> Iterator[str]:
    """``provision serve``'s server function with a brand, on a free loopback port."""
    app = make_app(web_engine, branding=Branding(name="Ledgerly", support="https://help.ledgerly.example"))
    yield from _background(serve, web_engine, "127.0.0.1", 0, app=app)


def test_operator_restarts_40_failed_attempts_after_a_dry_run(
        browser: Any, web_engine: Engine, console_url: str, sandbox: Any) -> None:
    healthy = web_engine.start_many([{"element": "quickbooks", "name": f"Healthy {i}", "flow": "quick",
                                      "config": quick_config()} for i in range(5)])
    web_engine.run_until_idle()
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 400}})  # a bad hour
    failed = web_engine.start_many([{"element": "quickbooks", "name": f"Bad hour {i:02}", "flow": "quick",
                                     "config": quick_config()} for i in range(40)])
    web_engine.run_until_idle()
    assert web_engine.counts() == {"PROVISIONED": 5, "FAILED": 40}
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    page.goto(f"{console_url}/")  # every page needs the login: straight to the form
    assert urlsplit(page.url).path == "/login"
    page.get_by_label("Your name").fill("alice")
    page.get_by_label("Token or password").fill(TOKEN)
    page.screenshot(path=str(ARTIFACTS / "console-login.png"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console_url}/")
    assert "signed in as alice" in page.inner_text("header")

    page.get_by_label("State", exact=True).select_option("FAILED")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/?*state=FAILED*")
    assert "40 shown" in page.inner_text("#shown")
    page.screenshot(path=str(ARTIFACTS / "console-failed.png"), full_page=False)

    page.locator("table.attempts a").first.click()
    page.wait_for_url("**/attempts/*")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Attempt Bad hour")
    facts = page.inner_text("dl.facts")
    assert "permanent_error" in facts and "bad_request" in facts
    assert page.locator("#diagram svg, #diagram pre").count() == 1
    page.screenshot(path=str(ARTIFACTS / "console-attempt.png"))
    page.go_back()

    page.get_by_role("link", name="Restart all matching... (dry run first)").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Dry run: 40 attempts would be affected"
    page.screenshot(path=str(ARTIFACTS / "console-dry-run.png"))
    assert web_engine.counts() == {"PROVISIONED": 5, "FAILED": 40}  # a dry run changes nothing

    # A POST without this session's CSRF token is refused, even with the session cookie.
    for form in ({"state": "FAILED", "expected": "40"}, {"state": "FAILED", "expected": "40", "csrf": "x"}):
        refused = page.request.post(f"{console_url}/bulk/restart", form=form)
        assert refused.status == 403
    assert web_engine.counts() == {"PROVISIONED": 5, "FAILED": 40}

    page.get_by_role("button", name="Restart 40 attempts").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Restart: 40 done, 0 skipped"
    assert web_engine.counts() == {"PROVISIONED": 5, "NEW": 40}
    assert {web_engine.history(a.id)[-1].note for a in failed} == {"operator:alice"}

    page.goto(f"{console_url}/?state=PROVISIONED")
    assert "5 shown" in page.inner_text("#shown")
    sandbox.set_faults()  # the platform is back; a worker runs
    web_engine.run_until_idle()
    assert web_engine.counts() == {"PROVISIONED": 45}
    # Live refresh swaps the list in place (no reload) within a few seconds.
    page.locator("#shown", has_text="45 shown").wait_for(timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "console-completed.png"))
    assert {a.id for a in healthy} <= set(page.locator("table.attempts a").evaluate_all(
        "links => links.map(a => a.getAttribute('href').split('/').pop())"))

    stranger = browser.new_context().new_page()  # another browser: no session
    stranger.goto(f"{console_url}/attempts/{failed[0].id}")
    assert urlsplit(stranger.url).path == "/login" and "Bad hour" not in stranger.content()


def test_customer_sees_connecting_then_the_truth_on_a_phone(
        browser: Any, web_engine: Engine, receiver_url: str) -> None:
    a = web_engine.start("quickbooks", "Phone Customer", flow="oauth2", **QBO)
    web_engine.run_until_idle()
    location = consent(web_engine.redirect_url(web_engine.get(a.id)) or "")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()

    page.goto(f"{receiver_url}/callback?{urlsplit(location).query}")
    assert page.get_by_role("heading", level=1).inner_text() == "Connecting..."
    assert a.id not in page.url and "code=" not in page.url  # the one-time code left the address bar
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    page.screenshot(path=str(ARTIFACTS / "customer-connecting-phone.png"))
    assert web_engine.get(a.id).state is State.CALLBACK_RECEIVED

    web_engine.run_until_idle()  # the worker finishes the connection; the page follows by itself
    page.get_by_role("heading", name="Connected", exact=True).wait_for(timeout=10_000)
    words = page.inner_text("body")
    assert "Your account is now connected to Ledgerly" in words and "Contact Ledgerly support" in words
    for internal in ("PROVISIONED", "CALLBACK_RECEIVED", "state", "nonce", "verifier", a.id):
        assert internal not in words, internal
    page.screenshot(path=str(ARTIFACTS / "customer-connected-phone.png"))

    page.goto(f"{receiver_url}/callback?{urlsplit(location).query}")  # the same link again
    assert page.get_by_role("heading", level=1).inner_text() == "This link is no longer valid"
    page.goto(f"{receiver_url}/callback?state=forged&code=x")
    assert page.get_by_role("heading", level=1).inner_text() == "This link is no longer valid"
    assert "state" not in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "customer-invalid-phone.png"))

"""What a customer's browser sees on the public receiver: "Connecting..." until the attempt is
done, then the truth in plain words, branded, with no internal word; progress links that are
unguessable and expire. A real engine against the sandbox, through werkzeug's test client."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from testkit import QBO, consent
from werkzeug.test import Client, run_wsgi_app
from werkzeug.wrappers import Response

from engine import Engine, InvalidInputError
from engine.config import Branding, branding_from_env, callback_page_key_from_env
from engine.web.callback_app import SeeOther, make_app
from engine.web.customer_pages import MESSAGES, CustomerPages
from engine.web.progress_tokens import ProgressTokens
from states import State

INTERNAL = ("NEW", "TOKEN_ISSUED", "REDIRECTED", "CALLBACK_RECEIVED", "PROVISIONED", "FAILED", "state",
            "nonce", "verifier", "invalid_database", "user_denied", "attempt")
BRAND = Branding(name="Ledgerly", logo_url="https://cdn.ledgerly.example/logo.png", colour="#0f766e",
                 background="#f0fdfa", support="help@ledgerly.example")


def visible_text(html: str) -> str:
    """The words a person reads: no tags, no stylesheet."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S))


def redirected(engine: Engine) -> tuple[str, str]:
    """An oauth2 attempt waiting for consent, and the query string of the provider's redirect."""
    a = engine.start("quickbooks", "Customer", flow="oauth2", **QBO)
    engine.run_until_idle()
    return a.id, urlsplit(consent(engine.redirect_url(engine.get(a.id)) or "")).query


@pytest.fixture
def now() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture
def receiver(web_engine: Engine, now: list[float]) -> Client:
    tokens = ProgressTokens(ttl_s=600, now=lambda: now[0])
    return Client(make_app(web_engine, branding=BRAND, tokens=tokens))


def test_connecting_then_connected_branded_and_plain(web_engine: Engine, receiver: Client) -> None:
    attempt_id, query = redirected(web_engine)
    first = receiver.get(f"/callback?{query}")
    assert first.status_code == 303
    progress = first.headers["Location"]
    assert attempt_id not in progress
    page = receiver.get(progress)
    html = page.get_data(as_text=True)
    assert "Connecting..." in html
    assert '<meta http-equiv="refresh" content="2; url=/callback/progress?t=' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<img src="https://cdn.ledgerly.example/logo.png" alt="Ledgerly logo">' in html
    assert "--brand:#0f766e;--bg:#f0fdfa" in html
    csp = page.headers["Content-Security-Policy"]
    assert "img-src https://cdn.ledgerly.example" in csp and "'sha256-" in csp and "script-src" not in csp
    web_engine.run_until_idle()
    assert web_engine.get(attempt_id).state is State.PROVISIONED
    done = receiver.get(progress).get_data(as_text=True)
    assert "http-equiv" not in done  # finished: it stops polling
    words = visible_text(done)
    assert "Connected" in words and "Your account is now connected to Ledgerly" in words
    assert 'href="mailto:help@ledgerly.example"' in done and "Contact Ledgerly support" in words
    for internal in INTERNAL:
        assert internal not in words, internal


def test_a_failure_after_the_callback_is_reported_as_one(web_engine: Engine, receiver: Client,
                                                         sandbox: Any) -> None:
    attempt_id, query = redirected(web_engine)
    progress = receiver.get(f"/callback?{query}").headers["Location"]
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 400}})
    web_engine.run_until_idle()
    assert web_engine.get(attempt_id).state is State.FAILED
    words = visible_text(receiver.get(progress).get_data(as_text=True))
    assert "Connection failed" in words and "could not connect your account to Ledgerly" in words
    assert "Connected" not in words.replace("Connection", "")
    for internal in INTERNAL:
        assert internal not in words, internal


def test_denied_consent_says_so(web_engine: Engine, receiver: Client) -> None:
    a = web_engine.start("quickbooks", "Denier", flow="oauth2", **QBO)
    web_engine.run_until_idle()
    location = consent(web_engine.redirect_url(web_engine.get(a.id)) or "", decision="deny")
    page = receiver.get(f"/callback?{urlsplit(location).query}", follow_redirects=True)
    assert web_engine.get(a.id).state is State.FAILED
    assert "You chose not to give Ledgerly access" in visible_text(page.get_data(as_text=True))


def test_progress_links_are_unguessable_and_expire(web_engine: Engine, receiver: Client,
                                                   now: list[float]) -> None:
    attempt_id, query = redirected(web_engine)
    progress = receiver.get(f"/callback?{query}").headers["Location"]
    token = progress.split("t=", 1)[1]
    for forged in (attempt_id, "", "x" * 600, token[:-4] + "AAAA", token.replace("A", "B", 1)):
        page = receiver.get(f"/callback/progress?t={forged}")
        assert page.status_code == 400, forged
        assert "This link is no longer valid" in page.get_data(as_text=True)
    other = ProgressTokens()  # another key: its tokens open nothing here
    assert receiver.get(f"/callback/progress?t={other.issue(attempt_id)}").status_code == 400
    assert receiver.get(progress).status_code == 200
    now[0] += 601
    expired = receiver.get(progress)
    assert expired.status_code == 400 and "This link is no longer valid" in expired.get_data(as_text=True)


def test_every_customer_page_is_plain(web_engine: Engine) -> None:
    pages = CustomerPages(BRAND)
    for kind in MESSAGES:
        words = visible_text(pages.page(kind).get_data(as_text=True))
        for internal in INTERNAL:
            assert internal not in words, (kind, internal)
    hostile = CustomerPages(Branding(name="<script>alert(1)</script>"),
                            messages={"connected": ("Done", "Welcome to {name}")})
    html = hostile.page("connected").get_data(as_text=True)
    assert "<script>" not in html and "Welcome to &lt;script&gt;" in html


def test_branding_and_page_key_settings_are_checked() -> None:
    assert branding_from_env({}) == Branding()
    brand = branding_from_env({"PROVISION_BRAND_NAME": "Ledgerly", "PROVISION_BRAND_COLOUR": "#abc",
                               "PROVISION_BRAND_SUPPORT": "https://help.example/x"})
    assert brand.name == "Ledgerly" and brand.support_href == "https://help.example/x"
    for var, value in (("PROVISION_BRAND_COLOUR", "red;}body{display:none"),
                       ("PROVISION_BRAND_BACKGROUND", "url(x)"),
                       ("PROVISION_BRAND_LOGO_URL", "javascript:alert(1)"),
                       ("PROVISION_BRAND_SUPPORT", "not an address"),
                       ("PROVISION_BRAND_NAME", "x" * 81),
                       ("PROVISION_CALLBACK_PAGE_KEY", "too-short")):
        with pytest.raises(InvalidInputError, match=var):
            if var == "PROVISION_CALLBACK_PAGE_KEY":
                callback_page_key_from_env({var: value})
            else:
                branding_from_env({var: value})


def test_health_and_readiness(web_engine: Engine, receiver: Client) -> None:
    assert receiver.get("/healthz").json == {"status": "ok"}
    assert receiver.get("/readyz").json == {"status": "ready"}
    broken = Client(make_app(web_engine, probe=lambda: "database unreachable"))
    not_ready = broken.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json == {"status": "not ready",
                                                               "problem": "database unreachable"}


@pytest.mark.parametrize("location", ["/callback/progress?t=gAAA-_%3D", "/my app/café/callback/progress?t=x"])
def test_the_bare_303_sends_what_a_werkzeug_response_would(location: str) -> None:
    response = Response(status=303, headers={"Location": location})
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    environ = {"REQUEST_METHOD": "GET", "SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    expected = run_wsgi_app(response, dict(environ))
    got = run_wsgi_app(SeeOther(location), dict(environ))
    assert (got[1], list(got[2].items()), b"".join(got[0])) == (
        expected[1], list(expected[2].items()), b"".join(expected[0]))

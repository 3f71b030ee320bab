"""Who may use the console: login by token or password, signed session cookies, CSRF on every
action, the loopback-only mode without login, and a listener that refuses to be exposed unprotected."""
from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from testkit import QUICK_CONFIG
from werkzeug.security import generate_password_hash
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request, Response

from engine import Engine, InvalidInputError
from engine.config import ConsoleSettings, console_settings_from_env
from engine.web.console import check_listener, serve_console
from engine.web.console_auth import COOKIE, ConsoleAuth, is_loopback
from states import State

TOKEN = "t0ken-for-the-console-tests"
ConsoleFor = Callable[..., Client]


def test_every_page_needs_a_login_when_one_is_configured(web_engine: Engine, console_for: ConsoleFor) -> None:
    client = console_for(web_engine, ConsoleSettings(token=TOKEN))
    a = web_engine.start("quickbooks", "Secret Co", flow="quick", config=QUICK_CONFIG)
    for path in ("/", f"/attempts/{a.id}", f"/attempts/{a.id}/cancel", "/bulk/restart?state=FAILED",
                 f"/attempts/{a.id}/diagram.mmd"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"].startswith("/login?next="), path
        assert "Secret Co" not in response.get_data(as_text=True)
    posted = client.post(f"/attempts/{a.id}/cancel", data={"csrf": "x"})
    assert posted.status_code == 303 and posted.headers["Location"].startswith("/login")
    assert web_engine.get(a.id).state is State.NEW
    # Health and the static files need no login (probes and the login page use them).
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json == {"status": "ready"}
    assert client.get("/static/console.css").status_code == 200


def test_token_login_sets_a_strict_cookie_and_records_the_name(
        web_engine: Engine, console_for: ConsoleFor, csrf: Callable[[str], str]) -> None:
    client = console_for(web_engine, ConsoleSettings(token=TOKEN), secure=True)
    form = client.get("/login?next=/%3Fstate%3DFAILED").get_data(as_text=True)
    assert '<label for="login-secret">Token or password</label>' in form and 'type="password"' in form
    refused = client.post("/login", data={"name": "alice", "secret": "wrong-token-here"})
    assert refused.status_code == 401 and "not accepted" in refused.get_data(as_text=True)
    assert COOKIE not in refused.headers.get("Set-Cookie", "")
    ok = client.post("/login", data={"name": "alice", "secret": TOKEN, "next": "/?state=FAILED"})
    assert ok.status_code == 303 and ok.headers["Location"] == "/?state=FAILED"
    cookie = ok.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"):
        assert flag in cookie, flag
    assert TOKEN not in cookie
    page = client.get("/").get_data(as_text=True)
    assert "signed in as <b>alice</b>" in page and "No login" not in page
    a = web_engine.start("quickbooks", "Acme", flow="quick", config=QUICK_CONFIG)
    confirm = client.get(f"/attempts/{a.id}/cancel").get_data(as_text=True)
    done = client.post(f"/attempts/{a.id}/cancel", data={"csrf": csrf(confirm)})
    assert done.status_code == 303
    assert web_engine.history(a.id)[-1].note == "operator:alice"
    # Logging out ends the session.
    out = client.post("/logout", data={"csrf": csrf(page)})
    assert out.status_code == 303 and f"{COOKIE}=;" in out.headers["Set-Cookie"]
    assert client.get("/").status_code == 303


def test_password_login_is_for_the_configured_user(web_engine: Engine, console_for: ConsoleFor) -> None:
    settings = console_settings_from_env({"PROVISION_CONSOLE_PASSWORD_HASH": generate_password_hash("pw-1"),
                                          "PROVISION_CONSOLE_USER": "ops"})
    client = console_for(web_engine, settings)
    assert client.post("/login", data={"name": "eve", "secret": "pw-1"}).status_code == 401
    assert client.post("/login", data={"name": "ops", "secret": "pw-2"}).status_code == 401
    assert client.post("/login", data={"name": "ops", "secret": "pw-1"}).status_code == 303
    assert "signed in as <b>ops</b>" in client.get("/").get_data(as_text=True)


def test_login_never_redirects_elsewhere(web_engine: Engine, console_for: ConsoleFor) -> None:
    client = console_for(web_engine, ConsoleSettings(token=TOKEN))
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        ok = client.post("/login", data={"name": "a", "secret": TOKEN, "next": target})
        assert ok.headers["Location"] == "/", target


def test_actions_need_the_session_csrf_token_and_our_origin(
        web_engine: Engine, console_for: ConsoleFor, csrf: Callable[[str], str]) -> None:
    client = console_for(web_engine)  # loopback mode: no login, but CSRF all the same
    a = web_engine.start("quickbooks", "Acme", flow="quick", config=QUICK_CONFIG)
    token = csrf(client.get(f"/attempts/{a.id}/cancel").get_data(as_text=True))
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}), ({"csrf": "forged"}, {}), ({"csrf": token}, {"Origin": "http://evil.example"})]
    for data, headers in attempts:
        refused = client.post(f"/attempts/{a.id}/cancel", data=data, headers=headers)
        assert refused.status_code == 403 and "CSRF" in refused.get_data(as_text=True), (data, headers)
    assert web_engine.get(a.id).state is State.NEW and len(web_engine.history(a.id)) == 0
    # A browser without the session cookie (another site's form) cannot use a stolen token either.
    stranger = console_for(web_engine)
    assert stranger.post(f"/attempts/{a.id}/cancel", data={"csrf": token}).status_code == 403
    ok = client.post(f"/attempts/{a.id}/cancel", data={"csrf": token},
                     headers={"Origin": "http://localhost"})
    assert ok.status_code == 303 and web_engine.get(a.id).state is State.FAILED
    assert web_engine.history(a.id)[-1].note == "operator:local"


def test_loopback_mode_shows_its_banner_and_only_answers_loopback_hosts(
        web_engine: Engine, console_for: ConsoleFor) -> None:
    client = console_for(web_engine)
    page = client.get("/").get_data(as_text=True)
    assert "No login: loopback only" in page
    rebound = client.get("/", headers={"Host": "evil.example"})
    assert rebound.status_code == 421 and "Attempts" not in rebound.get_data(as_text=True)
    assert client.get("/", headers={"Host": "[::1]:8060"}).status_code == 200


def test_sessions_are_signed_and_expire() -> None:
    now = [1000.0]
    auth = ConsoleAuth(ConsoleSettings(token=TOKEN, session_s=60), secure_cookies=False, now=lambda: now[0])
    operator = auth.check_login("bob", TOKEN)
    assert operator is not None and auth.check_login("bad name!", TOKEN) is None
    response = Response()
    auth.set_cookie(response, operator)
    value = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]

    def request_with(cookie: str) -> Request:
        return Request(EnvironBuilder(headers=[("Cookie", f"{COOKIE}={cookie}")]).get_environ())

    assert auth.session(request_with(value)) == operator
    payload, mac = value.rsplit(".", 1)
    assert auth.session(request_with(f"{payload}x.{mac}")) is None  # tampered
    other = ConsoleAuth(ConsoleSettings(token=TOKEN), secure_cookies=False, now=lambda: now[0])
    assert other.session(request_with(value)) is None  # another process's key
    now[0] += 61
    assert auth.session(request_with(value)) is None  # expired


def test_the_listener_refuses_to_be_exposed_without_a_login(web_engine: Engine) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("")
    with pytest.raises(InvalidInputError, match="not a loopback address") as err:
        serve_console(web_engine, "0.0.0.0", 0, settings=ConsoleSettings(), stop=threading.Event())
    assert err.value.field == "--host" and "PROVISION_CONSOLE_TOKEN" in str(err.value)
    check_listener("0.0.0.0", ConsoleSettings(token=TOKEN))  # allowed with a login
    check_listener("127.0.0.1", ConsoleSettings())


def test_console_settings_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="PROVISION_CONSOLE_TOKEN"):
        console_settings_from_env({"PROVISION_CONSOLE_TOKEN": "short"})
    with pytest.raises(InvalidInputError, match="PROVISION_CONSOLE_PASSWORD_HASH"):
        console_settings_from_env({"PROVISION_CONSOLE_PASSWORD_HASH": "plaintext"})
    settings = console_settings_from_env({"PROVISION_CONSOLE_TOKEN": TOKEN})
    assert settings.auth_configured and TOKEN not in repr(settings)

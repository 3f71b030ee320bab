"""Every flow end to end: real engine, real HTTP to the sandbox, real SQLite file / PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from testkit import QBO, QUICK_CONFIG, consent

from engine import Engine, MissingConfigurationError
from states import Flow, State, invalid_step


def served(sandbox: Any, endpoint: str, method: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in sandbox.requests()
        if r["endpoint"] == endpoint and (method is None or r["method"] == method)
    ]


def path(engine: Engine, attempt_id: str) -> list[tuple[str, str, str]]:
    rows = engine.history(attempt_id)
    assert invalid_step((h.trigger, h.source, h.dest) for h in rows) is None
    return [(h.trigger, h.source, h.dest) for h in rows]


def test_oauth1_quickbooks_sends_exactly_the_seed_guide_requests(make_engine: Callable[..., Engine],
                                                                  sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "QBO_Instance", flow="oauth1", tags=["For Docs"], **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.REDIRECTED
    url = engine.redirect_url(a)
    assert url and url.startswith(sandbox.root_url)

    [tok] = served(sandbox, "oauth_token")
    assert {k: v[0] for k, v in tok["query"].items()} == {
        "apiKey": QBO["api_key"], "apiSecret": QBO["api_secret"], "callbackUrl": QBO["callback_url"]}
    [oauth_url] = served(sandbox, "oauth_url")
    q = {k: v[0] for k, v in oauth_url["query"].items()}
    assert set(q) == {"apiKey", "apiSecret", "callbackUrl", "requestToken", "state"}
    assert q["state"].startswith(a.id + ".") and len(q["state"]) > len(a.id) + 40

    location = consent(url)
    outcome = engine.handle_callback(location)
    assert outcome.status == "applied" and outcome.state is State.CALLBACK_RECEIVED
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.instance_id

    [create] = served(sandbox, "create_instance", "POST")
    body = create["body"]
    cb = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert body["element"] == {"key": "quickbooks"}
    assert body["name"] == "QBO_Instance"
    assert body["providerData"] == {
        "oauth_token": cb["oauth_token"], "realmId": cb["realmId"], "oauth_verifier": cb["oauth_verifier"],
        "secret": body["providerData"]["secret"], "state": cb["state"], "dataSource": "QBO"}
    assert body["providerData"]["secret"]  # the request token's secret from step 1
    assert body["configuration"] == {"oauth.api.key": QBO["api_key"], "oauth.api.secret": QBO["api_secret"],
                                     "oauth.callback.url": QBO["callback_url"], "filter.response.nulls": True,
                                     "use_sandbox": "true"}  # the sandbox company was asked for
    assert body["tags"] == ["For Docs", a.instance_tag]
    assert path(engine, a.id) == [
        ("issue_token", "NEW", "TOKEN_ISSUED"),
        ("redirect", "TOKEN_ISSUED", "REDIRECTED"),
        ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED"),
        ("provision", "CALLBACK_RECEIVED", "PROVISIONED"),
    ]
    # The sandbox holds exactly one instance for this attempt.
    assert [i["id"] for i in engine.client.find_instances_by_tag(a.instance_tag)] == [int(a.instance_id)]
    assert a.refresh_interval_s == 13_046_400 and a.next_renewal_at is not None


@pytest.mark.parametrize("element,realm", [("quickbooks", True), ("sfdc", False)])
def test_oauth2_flow(make_engine: Callable[..., Engine], sandbox: Any, element: str, realm: bool) -> None:
    engine = make_engine()
    a = engine.start(element, "OAuth2 conn", flow="oauth2", **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.REDIRECTED
    assert served(sandbox, "oauth_token") == []  # OAuth2 has no request token
    [oauth_url] = served(sandbox, "oauth_url")
    q = {k: v[0] for k, v in oauth_url["query"].items()}
    if element == "quickbooks":
        assert q["scope"] == "com.intuit.quickbooks.accounting" and q["authentication.type"] == "oauth2"
    location = consent(engine.redirect_url(a) or "")
    assert engine.handle_callback(location).status == "applied"
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED
    [create] = served(sandbox, "create_instance", "POST")
    cb = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    expected = {"code": cb["code"], **({"realmId": cb["realmId"]} if realm else {})}
    assert create["body"]["providerData"] == expected
    assert path(engine, a.id) == [("redirect", "NEW", "REDIRECTED"),
                                  ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED"),
                                  ("provision", "CALLBACK_RECEIVED", "PROVISIONED")]
    assert a.refresh_interval_s == 3600


def test_quick_flow_posts_configuration_tokens(make_engine: Callable[..., Engine], sandbox: Any,
                                               clock: Any) -> None:
    engine = make_engine(clock=clock)
    a = engine.start("quickbooks", "QBO Token", flow="quick", tags=["QBO Token"], config=QUICK_CONFIG)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED
    [create] = served(sandbox, "create_instance", "POST")
    body = create["body"]
    assert body["externalAuthentication"] == "initial"
    cfg = body["configuration"]
    assert cfg["oauth.user.refresh_interval"] == "13046400"
    assert cfg["oauth.user.refresh_time"] == str(int(clock().timestamp() * 1000))  # epoch milliseconds
    for key, value in QUICK_CONFIG.items():
        assert cfg[key] == value
    assert "providerData" not in body
    assert path(engine, a.id) == [("quick_provision", "NEW", "PROVISIONED")]


def test_user_denies(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "Denied", **QBO)
    engine.run_until_idle()
    location = consent(engine.redirect_url(engine.get(a.id)) or "", decision="deny")
    assert "error=access_denied" in location
    assert engine.handle_callback(location).status == "applied"
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "user_denied"
    assert served(sandbox, "create_instance") == []
    assert engine.handle_callback(location).status == "duplicate"


def test_invalid_database_fails_with_platform_words_and_a_hint(make_engine: Callable[..., Engine],
                                                               sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "Prod company, dev keys", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or "", company="production"))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "invalid_database"
    err = a.last_error or {}
    assert err["kind"] == "invalid_database" and err["status"] == 400
    assert "invalid_database" in err["provider_message"] and len(err["request_id"]) == 24
    assert "production keys" in err["hint"] and "sandbox company" in err["hint"]
    assert len(served(sandbox, "create_instance", "POST")) == 1  # permanent: not retried


def test_production_keys_connect_a_production_company(
    make_engine: Callable[..., Engine], sandbox: Any
) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "Prod", api_key="prod-key", api_secret="prod-secret",
                     callback_url="https://app.example.com/cb")
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or "", company="production"))
    engine.run_until_idle()
    assert engine.get(a.id).state is State.PROVISIONED


@pytest.mark.parametrize("flow,missing", [
    ("oauth1", ["oauth.api.key", "oauth.api.secret", "oauth.callback.url"]),
    ("quick", ["oauth.api.key", "oauth.api.secret", "oauth.user.token", "oauth.user.token.secret",
               "quickbooks.realm.id"]),
])
def test_missing_configuration_is_refused_before_any_call(make_engine: Callable[..., Engine], sandbox: Any,
                                                          flow: str, missing: list[str]) -> None:
    engine = make_engine()
    with pytest.raises(MissingConfigurationError) as info:
        engine.start("quickbooks", "x", flow=flow)
    assert info.value.missing == sorted(missing)
    for key in missing:
        assert key in str(info.value)
    assert engine.list() == [] and sandbox.requests() == []


def test_sandbox_names_missing_configuration_too(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    from engine.errors import BadRequestError

    engine = make_engine()
    with pytest.raises(BadRequestError) as info:
        engine.client.create_instance({"element": {"key": "quickbooks"}, "name": "x", "configuration": {},
                                       "providerData": {"code": "c"}})
    for key in ("oauth.api.key", "oauth.api.secret", "oauth.callback.url"):
        assert key in info.value.message


def test_idempotency_key_starts_one_attempt(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "Once", idempotency_key="crm-7", **QBO)
    b = engine.start("quickbooks", "Once", idempotency_key="crm-7", **QBO)
    assert a.id == b.id and len(engine.list()) == 1


def test_cancel_and_restart_keep_history(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "Ops", flow=Flow.OAUTH2, **QBO)
    engine.run_until_idle()
    assert engine.cancel(a.id).failure_reason == "cancelled"
    assert engine.restart(a.id).state is State.NEW
    engine.run_until_idle()
    assert engine.get(a.id).state is State.REDIRECTED
    assert [h.trigger for h in engine.history(a.id)] == ["redirect", "fail", "restart", "redirect"]

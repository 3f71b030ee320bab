"""QuickBooks OAuth 1.0a: request token -> URL -> consent -> callback -> POST /instances."""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)

KEYS = {"apiKey": "dev-key", "apiSecret": "dev-secret"}


def test_request_token_shape_and_missing_params(api: Api) -> None:
    ok = api.call("GET", "/elements/quickbooks/oauth/token", params={**KEYS, "callbackUrl": api.callback})
    assert ok.status_code == 200
    token = ok.json()
    assert token["token"].startswith("qyprd") and len(token["token"]) == 45 and token["secret"]
    bad = api.call("GET", "/elements/quickbooks/oauth/token", params={"apiSecret": "s"})
    assert bad.status_code == 400
    assert "apiKey" in bad.json()["message"] and "callbackUrl" in bad.json()["message"]
    assert "apiSecret" not in bad.json()["message"]


def test_request_token_is_not_for_oauth2_elements(api: Api) -> None:
    response = api.call("GET", "/elements/sfdc/oauth/token", params={**KEYS, "callbackUrl": api.callback})
    assert response.status_code == 400


def test_oauth_url_requires_an_issued_request_token(api: Api) -> None:
    params = {**KEYS, "callbackUrl": api.callback, "requestToken": "qyprdforged"}
    assert api.call("GET", "/elements/quickbooks/oauth/url", params=params).status_code == 400
    params.pop("requestToken")
    missing = api.call("GET", "/elements/quickbooks/oauth/url", params=params)
    assert missing.status_code == 400 and "requestToken" in missing.json()["message"]


def test_full_oauth1_path(api: Api) -> None:
    token = api.call("GET", "/elements/quickbooks/oauth/token",
                     params={**KEYS, "callbackUrl": api.callback}).json()
    url_answer = api.call("GET", "/elements/quickbooks/oauth/url",
                          params={**KEYS, "callbackUrl": api.callback, "requestToken": token["token"],
                                  "state": "s&<x>"})
    assert url_answer.status_code == 200
    oauth_url = url_answer.json()["oauthUrl"]
    assert url_answer.json()["element"] == "quickbooks"
    assert oauth_url.startswith(api.root + "/_sandbox/consent?")
    query = api.query_of(oauth_url)
    assert query["oauth_token"] == token["token"]
    assert api.query_of(query["oauth_callback"]) == {"state": "s&<x>"}

    page = requests.get(oauth_url, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'name="decision" value="approve"' in page.text and 'value="deny"' in page.text
    assert 'name="company" value="sandbox" checked' in page.text
    assert "s&amp;&lt;x&gt;" in page.text and "<x>" not in page.text  # reflected values are escaped

    answer = requests.post(oauth_url, data={"decision": "approve"}, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(api.callback + "?")
    cb = api.query_of(location)
    assert set(cb) == {"state", "oauth_token", "oauth_verifier", "realmId", "dataSource"}
    assert cb["state"] == "s&<x>" and cb["oauth_token"] == token["token"] and cb["dataSource"] == "QBO"
    assert cb["realmId"].isdigit()

    created = api.create(api.oauth1_body(token, cb))
    assert created.status_code == 200, created.text
    instance = created.json()
    assert isinstance(instance["id"], int) and len(instance["token"]) == 44
    assert instance["element"]["key"] == "quickbooks" and instance["element"]["id"] == 39
    assert instance["elementId"] == 39 and instance["tags"] == ["For Docs"]
    assert instance["valid"] is True and instance["disabled"] is False
    assert instance["externalAuthentication"] == "none" and instance["provisionInteractions"] == []
    config = instance["configuration"]
    assert config["oauth.api.key"] == "********" and config["oauth.api.secret"] == "********"
    assert config["filter.response.nulls"] == "true"
    assert config["oauth.user.token"] and config["oauth.user.token.secret"]
    assert config["oauth.user.refresh_interval"] == "13046400"
    assert int(config["oauth.user.refresh_time"]) > 1_500_000_000_000
    assert instance["createdDate"].endswith("Z") and instance["user"]["id"]
    # The sandbox keeps the real key for the provider endpoints.
    assert api.sandbox.store.instances[instance["id"]].configuration["oauth.api.key"] == "dev-key"


def test_verifier_is_single_use_and_checked(api: Api) -> None:
    token, cb = api.oauth1_consent()
    wrong = api.oauth1_body(token, cb)
    wrong["providerData"]["oauth_verifier"] = "nope"
    rejected = api.create(wrong)
    assert rejected.status_code == 400
    assert rejected.json()["message"] == "Bad Request" and "verifier" in rejected.json()["providerMessage"]
    bad_secret = api.oauth1_body(token, cb)
    bad_secret["providerData"]["secret"] = "other"
    assert api.create(bad_secret).status_code == 400
    bad_realm = api.oauth1_body(token, cb)
    bad_realm["providerData"]["realmId"] = "1"
    assert api.create(bad_realm).status_code == 400
    assert api.create(api.oauth1_body(token, cb)).status_code == 200
    again = api.create(api.oauth1_body(token, cb))
    assert again.status_code == 400 and "providerMessage" in again.json()
    assert len(api.sandbox.store.instances) == 1


def test_deny_redirects_with_access_denied(api: Api) -> None:
    token, cb = api.oauth1_consent(decision="deny", state="mine")
    assert cb == {"state": "mine", "error": "access_denied", "oauth_token": token["token"]}


def test_callback_query_is_merged(api: Api) -> None:
    keys = {**KEYS, "callbackUrl": "http://app.example/cb?tenant=7"}
    token = api.call("GET", "/elements/quickbooks/oauth/token", params=keys).json()
    url = api.call("GET", "/elements/quickbooks/oauth/url",
                   params={**keys, "requestToken": token["token"]}).json()["oauthUrl"]
    location = requests.post(url, data={"decision": "approve"}, allow_redirects=False,
                             timeout=5).headers["Location"]
    cb = api.query_of(location)
    assert cb["tenant"] == "7" and cb["state"] == "quickbooks"  # default state = element key


def test_consent_errors_are_400_html(api: Api) -> None:
    unknown = requests.get(api.root + "/_sandbox/consent?oauth_token=nope&oauth_callback=x", timeout=5)
    assert unknown.status_code == 400 and unknown.headers["Content-Type"].startswith("text/html")
    assert "nope" in unknown.text
    neither = requests.get(api.root + "/_sandbox/consent", timeout=5)
    assert neither.status_code == 400
    token = api.call("GET", "/elements/quickbooks/oauth/token",
                     params={**KEYS, "callbackUrl": api.callback}).json()
    params = {**KEYS, "callbackUrl": api.callback, "requestToken": token["token"]}
    url = api.call("GET", "/elements/quickbooks/oauth/url", params=params).json()["oauthUrl"]
    for form in ({"decision": "maybe"}, {"decision": "approve", "company": "<b>"}):
        bad = requests.post(url, data=form, allow_redirects=False, timeout=5)
        assert bad.status_code == 400 and "<b>" not in bad.text

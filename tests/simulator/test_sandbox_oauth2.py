"""OAuth2 flows (QuickBooks with authentication.type=oauth2, sfdc, hubspot) and Intuit's key rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)

INVALID_DATABASE = ("Error code : invalid_database. Error message : Development application can only "
                    "subscribe to sandbox company. Please use production keys or connect a sandbox company.")


def test_quickbooks_oauth2_url_and_callback(api: Api) -> None:
    params = {"apiKey": "dev-client", "apiSecret": "x", "callbackUrl": api.callback,
              "authentication.type": "oauth2", "scope": "com.intuit.quickbooks.accounting"}
    answer = api.call("GET", "/elements/quickbooks/oauth/url", params=params).json()
    query = api.query_of(answer["oauthUrl"])
    assert query["response_type"] == "code" and query["client_id"] == "dev-client"
    assert query["redirect_uri"] == api.callback and query["state"] == "quickbooks"
    assert query["scope"] == "com.intuit.quickbooks.accounting"
    cb = api.oauth2_consent()
    assert set(cb) == {"code", "state", "realmId"} and cb["state"] == "st-2"


def test_oauth_url_post_json_equivalent(api: Api) -> None:
    body = {"apiKey": "c", "apiSecret": "s", "callbackUrl": api.callback, "state": "abc"}
    answer = api.call("POST", "/elements/hubspot/oauth/url", json=body)
    assert answer.status_code == 200
    assert api.query_of(answer.json()["oauthUrl"])["state"] == "abc"
    missing = api.call("POST", "/elements/hubspot/oauth/url", json={"apiKey": "c"})
    assert missing.status_code == 400
    assert "apiSecret" in missing.json()["message"] and "callbackUrl" in missing.json()["message"]


@pytest.mark.parametrize("element", ["quickbooks", "sfdc", "hubspot"])
def test_oauth2_create_with_single_use_code(api: Api, element: str) -> None:
    cb = api.oauth2_consent(element)
    assert ("realmId" in cb) == (element == "quickbooks")
    created = api.create(api.oauth2_body(cb, element))
    assert created.status_code == 200, created.text
    config = created.json()["configuration"]
    assert config["oauth.user.refresh_token"] and config["oauth.user.refresh_interval"] == "3600"
    assert config["oauth.api.secret"] == "********"
    assert created.json()["element"]["authentication"]["type"] == "oauth2"
    replay = api.create(api.oauth2_body(cb, element))
    assert replay.status_code == 400
    assert replay.json()["message"] == "Bad Request" and "invalid_grant" in replay.json()["providerMessage"]


def test_code_bound_to_client(api: Api) -> None:
    cb = api.oauth2_consent("sfdc", api_key="client-a")
    assert api.create(api.oauth2_body(cb, "sfdc", api_key="client-b")).status_code == 400


def test_development_key_on_production_company_is_invalid_database(api: Api) -> None:
    cb = api.oauth2_consent(company="production")
    rejected = api.create(api.oauth2_body(cb))
    assert rejected.status_code == 400
    assert rejected.json() == {"requestId": rejected.headers["Elements-Request-Id"], "message": "Bad Request",
                               "providerMessage": INVALID_DATABASE}
    assert api.sandbox.store.instances == {}
    token, cb1 = api.oauth1_consent(company="production")
    assert api.create(api.oauth1_body(token, cb1)).json()["providerMessage"] == INVALID_DATABASE
    assert api.sandbox.store.instances == {}


def test_production_key_on_production_company_succeeds(api: Api) -> None:
    cb = api.oauth2_consent(api_key="prod-client", company="production")
    assert api.create(api.oauth2_body(cb, api_key="prod-client")).status_code == 200
    token, cb1 = api.oauth1_consent(api_key="prod-key", company="production")
    assert api.create(api.oauth1_body(token, cb1, api_key="prod-key")).status_code == 200


def test_oauth2_deny(api: Api) -> None:
    cb = api.oauth2_consent("sfdc", decision="deny", state="zz")
    assert cb == {"error": "access_denied", "state": "zz"}


def test_consent_requires_client_and_redirect(api: Api) -> None:
    page = requests.get(api.root + "/_sandbox/consent?response_type=code&client_id=x", timeout=5)
    assert page.status_code == 400 and "redirect_uri" in page.text

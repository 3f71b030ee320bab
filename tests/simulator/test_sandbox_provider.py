"""Fake Intuit endpoints: OAuth2 refresh-token rotation and OAuth1 Reconnect windows (on a FakeClock)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import defusedxml.ElementTree as SafeET
import pytest
import requests
from requests_oauthlib import OAuth1

from engine.clock import FakeClock
from sandbox import Sandbox, start

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)


def at(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS`` as an aware UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    """The sandbox's time in these tests; each test sets it before its first request."""
    return FakeClock(at("2024-01-01 00:00:00"))


@pytest.fixture()
def sim(clock: FakeClock) -> Iterator[Sandbox]:
    """``sim_fixtures.sim`` (seeded, free port) reading its time from ``clock``."""
    with start(port=0, seed=1, now=lambda: clock().timestamp()) as running:
        yield running


def refresh(api: Api, token: str, client: tuple[str, str] = ("dev-client", "client-secret"),
            grant: str = "refresh_token") -> requests.Response:
    return requests.post(api.root + "/_provider/oauth2/tokens/bearer", auth=client,
                         data={"grant_type": grant, "refresh_token": token}, timeout=5)


NS = "{http://platform.intuit.com/api/v1}"


def reconnect(api: Api, consumer_key: str, token: str, token_secret: str = "",
              consumer_secret: str = "dev-secret", *, signed: bool = True) -> dict[str, str | None]:
    """Reconnect as quickbooks-ruby does it: a GET signed by requests-oauthlib (third-party signing)."""
    auth = OAuth1(consumer_key, client_secret=consumer_secret, resource_owner_key=token,
                  resource_owner_secret=token_secret) if signed else None
    answer = requests.get(api.root + "/_provider/oauth1/reconnect", auth=auth, timeout=5)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/xml")
    root = SafeET.fromstring(answer.content)
    assert root.tag == NS + "ReconnectResponse"
    assert root.find(NS + "ServerTime") is not None
    return {child.tag.removeprefix(NS): child.text for child in root}


def test_refresh_token_rotates(api: Api, clock: FakeClock) -> None:
    clock.now = at("2024-01-01 00:00:00")
    instance = api.create(api.oauth2_body(api.oauth2_consent())).json()
    first = instance["configuration"]["oauth.user.refresh_token"]
    answer = refresh(api, first)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 3600
    assert tokens["x_refresh_token_expires_in"] == 8640000 and tokens["access_token"]
    second = tokens["refresh_token"]
    assert second != first
    assert refresh(api, first).json() == {"error": "invalid_grant"}  # presented token died at once
    assert refresh(api, first).status_code == 400
    assert api.sandbox.store.valid_refresh_tokens(instance["id"]) == [second]
    # The instance keeps what it was told until the client PATCHes the new token in.
    assert api.call("GET", f"/instances/{instance['id']}").json()["configuration"][
        "oauth.user.refresh_token"] == first

    assert refresh(api, second, client=("dev-client", "wrong")).status_code == 401
    assert refresh(api, second, grant="password").json() == {"error": "unsupported_grant_type"}
    clock.now = at("2024-04-09 23:00:00")  # 99 days later: still inside the rolling 100 days
    third = refresh(api, second).json()["refresh_token"]
    clock.now = at("2024-07-19 00:00:00")  # 101 days after the last use
    assert refresh(api, third).json() == {"error": "invalid_grant"}
    assert refresh(api, "unknown").json() == {"error": "invalid_grant"}


def test_reconnect_window(api: Api, clock: FakeClock) -> None:
    clock.now = at("2024-01-01 00:00:00")
    token, cb = api.oauth1_consent()
    config = api.create(api.oauth1_body(token, cb)).json()["configuration"]
    access, secret = config["oauth.user.token"], config["oauth.user.token.secret"]
    assert reconnect(api, "dev-key", access, secret)["ErrorCode"] == "212"  # too early
    clock.now = at("2024-05-31 00:00:00")  # day 151: inside the last 30 days of 180
    renewed = reconnect(api, "dev-key", access, secret)
    assert renewed["ErrorCode"] == "0" and renewed["ErrorMessage"] is None
    assert renewed["ServerTime"] == "2024-05-31T00:00:00.0000000Z"
    assert renewed["OAuthToken"] is not None and renewed["OAuthToken"] != access
    new_secret = renewed["OAuthTokenSecret"]
    assert new_secret
    assert reconnect(api, "dev-key", access, secret)["ErrorCode"] == "270"  # old token invalidated
    # A fresh 180 days: too early again.
    assert reconnect(api, "dev-key", renewed["OAuthToken"], new_secret)["ErrorCode"] == "212"
    assert reconnect(api, "other-key", renewed["OAuthToken"], new_secret)["ErrorCode"] == "270"
    clock.now = at("2024-11-28 00:00:00")  # past the renewed token's 180 days
    assert reconnect(api, "dev-key", renewed["OAuthToken"], new_secret)["ErrorCode"] == "270"
    assert reconnect(api, "dev-key", "nope", "x")["ErrorCode"] == "270"


def test_reconnect_refuses_unsigned_and_badly_signed_calls(api: Api, clock: FakeClock) -> None:
    """Intuit's ErrorCode 22 "This API requires Authorization." for anything not properly signed."""
    clock.now = at("2024-01-01 00:00:00")
    token, cb = api.oauth1_consent()
    config = api.create(api.oauth1_body(token, cb)).json()["configuration"]
    access, secret = config["oauth.user.token"], config["oauth.user.token.secret"]
    clock.now = at("2024-05-31 00:00:00")
    unsigned = reconnect(api, "dev-key", access, signed=False)
    assert unsigned["ErrorCode"] == "22"
    assert unsigned["ErrorMessage"] == "This API requires Authorization."
    # The old unsigned query-string form is refused too.
    answer = requests.get(api.root + "/_provider/oauth1/reconnect", timeout=5,
                          params={"oauth_consumer_key": "dev-key", "oauth_token": access})
    assert SafeET.fromstring(answer.content).findtext(NS + "ErrorCode") == "22"
    assert reconnect(api, "dev-key", access, secret, consumer_secret="wrong")["ErrorCode"] == "22"
    assert reconnect(api, "dev-key", access, "wrong-token-secret")["ErrorCode"] == "22"
    # None of these spent the token: a correctly signed call still renews it.
    assert reconnect(api, "dev-key", access, secret)["ErrorCode"] == "0"


def test_replayed_signed_reconnect_is_refused(api: Api, clock: FakeClock) -> None:
    clock.now = at("2024-01-01 00:00:00")
    token, cb = api.oauth1_consent()
    config = api.create(api.oauth1_body(token, cb)).json()["configuration"]
    clock.now = at("2024-05-31 00:00:00")
    auth = OAuth1("dev-key", client_secret="dev-secret", resource_owner_key=config["oauth.user.token"],
                  resource_owner_secret=config["oauth.user.token.secret"])
    prepared = requests.Request("GET", api.root + "/_provider/oauth1/reconnect", auth=auth).prepare()
    with requests.Session() as session:
        first = session.send(prepared, timeout=5)
        again = session.send(prepared, timeout=5)  # same nonce and timestamp
    assert SafeET.fromstring(first.content).findtext(NS + "ErrorCode") == "0"
    assert SafeET.fromstring(again.content).findtext(NS + "ErrorCode") == "22"


def test_quick_provisioned_token_life_runs_from_refresh_time(api: Api, clock: FakeClock) -> None:
    clock.now = at("2024-06-01 00:00:00")
    granted_ms = 1704067200000  # 2024-01-01: 152 days ago, inside the renewal window
    body = {"element": {"key": "quickbooks"}, "externalAuthentication": "initial",
            "configuration": {"oauth.api.key": "k", "oauth.api.secret": "s", "oauth.user.token": "qyprdQ",
                              "oauth.user.token.secret": "S", "quickbooks.realm.id": "42",
                              "use_sandbox": True, "oauth.user.refresh_time": str(granted_ms)}}
    assert api.create(body).status_code == 200
    assert reconnect(api, "k", "qyprdQ", "S", consumer_secret="s")["ErrorCode"] == "0"


def test_provider_calls_are_faultable_and_logged(api: Api, clock: FakeClock) -> None:
    api.sandbox.set_faults(fails={"provider_token": {"rate": 1, "status": 503, "count": 1}})
    assert refresh(api, "x").status_code == 503
    assert refresh(api, "x").status_code == 400
    assert [e["endpoint"] for e in api.sandbox.requests()] == ["provider_token", "provider_token"]
    assert api.sandbox.requests()[1]["body"] == {"grant_type": "refresh_token", "refresh_token": "x"}


def test_a_patched_answer_drifts_but_the_token_still_rotates(api: Api, clock: FakeClock) -> None:
    clock.now = at("2024-01-01 00:00:00")
    instance = api.create(api.oauth2_body(api.oauth2_consent())).json()
    first = instance["configuration"]["oauth.user.refresh_token"]
    patch = {"expires_in": "3600.0", "x_refresh_token_expires_in": None}
    assert api.call("POST", "/_sandbox/faults", json={"patch": {"provider_token": patch}}).json()[
        "patch"] == {"provider_token": patch}
    tokens = refresh(api, first).json()
    assert tokens["expires_in"] == "3600.0" and "x_refresh_token_expires_in" not in tokens
    assert api.sandbox.store.valid_refresh_tokens(instance["id"]) == [tokens["refresh_token"]]
    assert refresh(api, "unknown").json() == {"error": "invalid_grant"}  # errors are not patched

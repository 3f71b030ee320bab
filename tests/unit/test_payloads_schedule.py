"""Pure domain helpers: request bodies per flow (states.payloads), due times (states.schedule) and the
element catalogue (states.elements)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from unit.fakes import QBO_CONFIG, T0, make_attempt, ms

from states.elements import ELEMENTS, OAUTH2_INTERVAL_S, QBO_OAUTH1_INTERVAL_S, spec_for
from states.model import Flow, State
from states.payloads import instance_body, oauth_url_params, quick_body, token_params
from states.schedule import is_past, next_renewal_at, renewal_lead_s

APP = {"apiKey": "dev-consumer-key", "apiSecret": "dev-consumer-secret",
       "callbackUrl": "https://app.example.com/cb"}


# --- states.payloads -----------------------------------------------------------------------------


def test_token_params_are_the_apps_keys_and_callback() -> None:
    assert token_params(make_attempt(State.NEW, Flow.OAUTH1)) == APP


def test_token_params_name_a_missing_key() -> None:
    with pytest.raises(KeyError, match="oauth.api.secret"):
        token_params(make_attempt(State.NEW, Flow.OAUTH1, config={"oauth.api.key": "k"}))


def test_oauth_url_params_per_flow() -> None:
    oauth1 = make_attempt(State.TOKEN_ISSUED, Flow.OAUTH1)
    assert oauth_url_params(oauth1, state="s", request_token="rt") == {
        **APP, "requestToken": "rt", "state": "s"}
    qbo2 = make_attempt(State.NEW, Flow.OAUTH2)
    assert oauth_url_params(qbo2, state="s", request_token=None) == {
        **APP, "scope": "com.intuit.quickbooks.accounting", "authentication.type": "oauth2", "state": "s"}
    scoped = make_attempt(State.NEW, Flow.OAUTH2, config={**QBO_CONFIG, "scope": "openid"})
    assert oauth_url_params(scoped, state="s", request_token=None)["scope"] == "openid"  # the caller's wins
    unknown = make_attempt(State.NEW, Flow.OAUTH2, element="acme-erp")
    assert oauth_url_params(unknown, state="s", request_token=None) == {**APP, "state": "s"}


def test_instance_body_oauth1_carries_the_verifier_and_request_token_secret() -> None:
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH1, tags=("a", "b"), secrets={
        "callback": {"oauth_token": "rt", "oauth_verifier": "v", "realmId": "9", "state": "s",
                     "dataSource": "QBO"},
        "request_token_secret": "rts"})
    assert instance_body(attempt) == {
        "element": {"key": "quickbooks"},
        "providerData": {"oauth_token": "rt", "realmId": "9", "oauth_verifier": "v", "secret": "rts",
                         "state": "s", "dataSource": "QBO"},
        "configuration": {"filter.response.nulls": True, **QBO_CONFIG},
        "tags": ["a", "b", "provision-attempt-att-1"],
        "name": "Acme books",
    }


def test_instance_body_oauth2_sends_the_code_and_a_realm_only_when_given() -> None:
    with_realm = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2,
                              secrets={"callback": {"code": "c", "realmId": "9", "state": "s"}})
    body = instance_body(with_realm)
    assert body["providerData"] == {"code": "c", "realmId": "9"}
    assert body["configuration"] == {"authentication.type": "oauth2", **QBO_CONFIG}
    sfdc = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2, element="sfdc",
                        secrets={"callback": {"code": "c"}})
    assert instance_body(sfdc)["providerData"] == {"code": "c"}
    assert instance_body(sfdc)["configuration"] == QBO_CONFIG


def test_caller_configuration_overrides_the_elements_defaults() -> None:
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH1,
                           config={**QBO_CONFIG, "filter.response.nulls": False})
    assert instance_body(attempt)["configuration"]["filter.response.nulls"] is False


def test_quick_body_defaults_the_interval_and_grant_time() -> None:
    attempt = make_attempt(State.NEW, Flow.QUICK)
    assert quick_body(attempt, T0) == {
        "element": {"key": "quickbooks"},
        "configuration": {"quickbooks.datasource": "QBO", **QBO_CONFIG,
                          "oauth.user.refresh_interval": str(QBO_OAUTH1_INTERVAL_S),
                          "oauth.user.refresh_time": str(ms(T0))},
        "tags": ["provision-attempt-att-1"],
        "name": "Acme books",
        "externalAuthentication": "initial",
    }
    given = make_attempt(State.NEW, Flow.QUICK, config={
        **QBO_CONFIG, "oauth.user.refresh_interval": "60", "oauth.user.refresh_time": "1"})
    cfg = quick_body(given, T0)["configuration"]
    assert (cfg["oauth.user.refresh_interval"], cfg["oauth.user.refresh_time"]) == ("60", "1")
    # An element with no known quick interval leaves it to the platform.
    sfdc = make_attempt(State.NEW, Flow.QUICK, element="sfdc")
    assert "oauth.user.refresh_interval" not in quick_body(sfdc, T0)["configuration"]


# --- states.schedule -----------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "max_lead", "lead"), [
    (13_046_400, 900, 900.0),  # long intervals: the cap
    (3600, 900, 360.0),  # an hour: 10%
    (9000, 900, 900.0),  # exactly where both rules agree
    (3600, 60, 60.0),  # a tighter cap
    (0, 900, 0.0),
])
def test_renewal_lead(interval: int, max_lead: int, lead: float) -> None:
    assert renewal_lead_s(interval, max_lead) == lead


def test_next_renewal_at_is_aware_utc() -> None:
    due = next_renewal_at(ms(T0), 3600)
    assert due == T0 + timedelta(seconds=3240) and due.tzinfo is timezone.utc
    assert next_renewal_at(ms(T0), 3600, max_lead_s=60) == T0 + timedelta(seconds=3540)


def test_is_past_includes_the_moment_itself() -> None:
    assert not is_past(None, T0)
    assert not is_past(T0 + timedelta(microseconds=1), T0)
    assert is_past(T0, T0) and is_past(T0 - timedelta(days=1), T0)
    assert is_past(datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))), T0)  # same instant


# --- states.elements -----------------------------------------------------------------------------


def test_known_elements_and_their_flows() -> None:
    assert set(ELEMENTS) == {"quickbooks", "sfdc", "hubspot"}
    qbo = spec_for("quickbooks")
    assert qbo.default_flow is Flow.OAUTH1 and qbo.flows == (Flow.OAUTH1, Flow.OAUTH2, Flow.QUICK)
    assert qbo.refresh_interval_s == {Flow.OAUTH1: QBO_OAUTH1_INTERVAL_S, Flow.QUICK: QBO_OAUTH1_INTERVAL_S,
                                      Flow.OAUTH2: OAUTH2_INTERVAL_S}
    assert spec_for("sfdc").flows == (Flow.OAUTH2,) and spec_for("hubspot").default_flow is Flow.OAUTH2


def test_an_unknown_element_is_a_generic_oauth2_element() -> None:
    spec = spec_for("acme-erp")
    assert spec.key == "acme-erp" and spec.default_flow is Flow.OAUTH2
    assert spec.flows == (Flow.OAUTH2, Flow.OAUTH1)
    assert spec.refresh_interval_s == {Flow.OAUTH2: OAUTH2_INTERVAL_S} and spec.oauth2_url_params == {}


def test_required_configuration_per_flow() -> None:
    oauth = ("oauth.api.key", "oauth.api.secret", "oauth.callback.url")
    quick = ("oauth.api.key", "oauth.api.secret", "oauth.user.token", "oauth.user.token.secret")
    assert spec_for("quickbooks").required_config(Flow.OAUTH1) == oauth
    assert spec_for("sfdc").required_config(Flow.OAUTH2) == oauth
    assert spec_for("quickbooks").required_config(Flow.QUICK) == (*quick, "quickbooks.realm.id")
    assert spec_for("acme-erp").required_config(Flow.QUICK) == quick

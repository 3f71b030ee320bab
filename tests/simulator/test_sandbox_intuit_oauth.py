"""Intuit's own ``intuit-oauth`` client against the sandbox's provider endpoints (issue 15, must-have 8).

``AuthClient`` loads the OpenID discovery document first; given a URL as its ``environment`` it loads it
from there (intuitlib/utils.py ``get_discovery_doc``), so the whole client runs unmodified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError

if TYPE_CHECKING:
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]

REDIRECT = "http://app.example/intuit-callback"


def _consent(url: str) -> dict[str, str]:
    answer = requests.post(url, data={"decision": "approve", "company": "sandbox"}, allow_redirects=False,
                           timeout=5)
    assert answer.status_code == 302, answer.text
    from simulator.sim_fixtures import query_of  # noqa: PLC0415 - the plugin module, loaded by pytest

    return query_of(answer.headers["Location"])


def test_auth_client_code_grant_refresh_and_revoke(api: Api) -> None:
    discovery = api.root + "/_provider/.well-known/openid_configuration"
    client = AuthClient("intuit-client", "intuit-secret", REDIRECT, discovery)
    assert client.token_endpoint == api.root + "/_provider/oauth2/tokens/bearer"

    url = client.get_authorization_url([Scopes.ACCOUNTING])
    callback = _consent(url)
    assert callback["state"] == client.state_token and callback["realmId"]
    client.get_bearer_token(callback["code"], realm_id=callback["realmId"])
    first = client.refresh_token
    assert client.access_token and first and client.expires_in == 3600
    assert client.x_refresh_token_expires_in == 100 * 86400
    assert client.x_refresh_token_hard_expires_in is None  # only when asked for

    client.include_refresh_token_hard_expires_in = True
    client.refresh()
    assert client.refresh_token != first  # rotated
    hard = client.x_refresh_token_hard_expires_in
    assert hard is not None and 0 < hard <= 5 * 365 * 86400
    with pytest.raises(AuthClientError) as err:
        client.refresh(refresh_token=first)  # the old one died at rotation
    assert err.value.status_code == 400 and "invalid_grant" in err.value.content.decode()

    with pytest.raises(AuthClientError) as err:
        client.get_bearer_token(callback["code"])  # codes are single use
    assert err.value.status_code == 400

    assert client.revoke() is True
    with pytest.raises(AuthClientError) as err:
        client.refresh()
    assert err.value.status_code == 400
    presented = api.sandbox.store.refresh_presentations
    assert [token for token, _, _ in presented][:2] == [first, first]  # the refresh, then the stale retry
    assert {who for _, who, _ in presented} == {"client"}


def test_wrong_client_secret_is_invalid_client(api: Api) -> None:
    discovery = api.root + "/_provider/.well-known/openid_configuration"
    good = AuthClient("intuit-client", "intuit-secret", REDIRECT, discovery)
    good.get_bearer_token(_consent(good.get_authorization_url([Scopes.ACCOUNTING]))["code"])
    bad = AuthClient("intuit-client", "not-the-secret", REDIRECT, discovery)
    with pytest.raises(AuthClientError) as err:
        bad.refresh(refresh_token=good.refresh_token)
    assert err.value.status_code == 401 and "invalid_client" in err.value.content.decode()

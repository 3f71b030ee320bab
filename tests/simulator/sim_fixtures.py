"""Fixtures for the sandbox tests: a running sandbox on a free port and a small HTTP helper.

Why not ``conftest.py``: this directory has no ``__init__.py``, so a ``conftest.py`` here would be
imported as the top-level module ``conftest`` and replace ``tests/conftest.py`` in ``sys.modules``,
breaking the suite's ``from conftest import ...``.  Test modules load this file with
``pytest_plugins = ["sim_fixtures"]``.
Why not ``tests/sandbox/``: with ``tests/`` on ``sys.path`` (pytest's default "prepend" import mode
puts it there for ``tests/conftest.py``) a ``tests/sandbox/`` directory is a namespace package that
shadows the real ``sandbox`` package when that is installed in editable mode.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

# The package is not necessarily installed in the test venv; make the repository root importable.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sandbox import DEFAULT_ORG_SECRET, DEFAULT_USER_SECRET, Sandbox, start  # noqa: E402

AUTH = f"User {DEFAULT_USER_SECRET}, Organization {DEFAULT_ORG_SECRET}"
CALLBACK = "http://app.example/callback"


def query_of(url: str) -> dict[str, str]:
    """The query of ``url`` as a flat dict."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


class Api:
    """Thin ``requests`` wrapper bound to one sandbox, with the platform auth header by default."""

    callback = CALLBACK
    query_of = staticmethod(query_of)

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.base = sandbox.base_url
        self.root = sandbox.root_url

    def call(self, method: str, path: str, *, auth: str | None = AUTH, **kwargs: Any) -> requests.Response:
        """``method`` on BASE_PATH + ``path`` (or the root when ``path`` starts with ``/_``)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth is not None:
            headers.setdefault("Authorization", auth)
        url = (self.root if path.startswith(("/_", "/health")) else self.base) + path
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 5)
        return requests.request(method, url, headers=headers, **kwargs)

    # -- flows -----------------------------------------------------------------------------------
    def oauth1_consent(self, *, api_key: str = "dev-key", company: str = "sandbox", state: str = "st-1",
                       decision: str = "approve") -> tuple[dict[str, str], dict[str, str]]:
        """token -> url -> consent POST; returns (request token JSON, callback query)."""
        keys = {"apiKey": api_key, "apiSecret": "dev-secret", "callbackUrl": CALLBACK}
        token = self.call("GET", "/elements/quickbooks/oauth/token", params=keys).json()
        url = self.call("GET", "/elements/quickbooks/oauth/url",
                        params={**keys, "requestToken": token["token"], "state": state}).json()["oauthUrl"]
        answer = requests.post(url, data={"decision": decision, "company": company},
                               allow_redirects=False, timeout=5)
        assert answer.status_code == 302, answer.text
        return token, query_of(answer.headers["Location"])

    def oauth1_body(self, token: dict[str, str], cb: dict[str, str], api_key: str = "dev-key",
                    tags: list[str] | None = None) -> dict[str, Any]:
        """The POST /instances body of elements-api.md §4a."""
        return {
            "element": {"key": "quickbooks"},
            "providerData": {"oauth_token": cb["oauth_token"], "realmId": cb["realmId"],
                             "oauth_verifier": cb["oauth_verifier"], "secret": token["secret"],
                             "state": cb["state"], "dataSource": cb["dataSource"]},
            "configuration": {"oauth.api.key": api_key, "oauth.api.secret": "dev-secret",
                              "oauth.callback.url": CALLBACK, "filter.response.nulls": True,
                              "use_sandbox": "true"},
            "tags": tags if tags is not None else ["For Docs"],
            "name": "QBO_Instance",
        }

    def oauth2_consent(self, element: str = "quickbooks", *, api_key: str = "dev-client",
                       company: str = "sandbox", state: str = "st-2",
                       decision: str = "approve") -> dict[str, str]:
        """url -> consent POST for an OAuth2 flow; returns the callback query."""
        params = {"apiKey": api_key, "apiSecret": "client-secret", "callbackUrl": CALLBACK, "state": state}
        if element == "quickbooks":
            params["authentication.type"] = "oauth2"
        url = self.call("GET", f"/elements/{element}/oauth/url", params=params).json()["oauthUrl"]
        answer = requests.post(url, data={"decision": decision, "company": company},
                               allow_redirects=False, timeout=5)
        assert answer.status_code == 302, answer.text
        return query_of(answer.headers["Location"])

    def oauth2_body(self, cb: dict[str, str], element: str = "quickbooks", api_key: str = "dev-client",
                    tags: list[str] | None = None) -> dict[str, Any]:
        """The POST /instances body of elements-api.md §4b/§4c."""
        config: dict[str, Any] = {"oauth.callback.url": CALLBACK, "oauth.api.key": api_key,
                                  "oauth.api.secret": "client-secret"}
        provider_data = {"code": cb["code"]}
        if element == "quickbooks":
            config.update({"authentication.type": "oauth2", "use_sandbox": "true"})
            provider_data["realmId"] = cb["realmId"]
        return {"element": {"key": element}, "providerData": provider_data, "configuration": config,
                "tags": tags if tags is not None else ["Docs"], "name": "API Instance"}

    def create(self, body: dict[str, Any]) -> requests.Response:
        """POST /instances."""
        return self.call("POST", "/instances", json=body)


@pytest.fixture()
def sim() -> Iterator[Sandbox]:
    """A sandbox on a free loopback port, stopped after the test.

    Named ``sim`` rather than ``sandbox`` so that it never competes with ``tests/conftest.py``.
    """
    with start(port=0, seed=1) as running:
        yield running


@pytest.fixture()
def api(sim: Sandbox) -> Api:
    """HTTP helper bound to :func:`sim`."""
    return Api(sim)

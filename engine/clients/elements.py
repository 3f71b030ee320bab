"""The Cloud Elements client: calls of ``elements/api-v2`` over the shared :mod:`transport`.

Messages built here never contain URLs, query strings or bodies, because those carry api secrets,
tokens and verifiers (GET /oauth/token takes ``apiSecret`` in its query string).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from requests.utils import requote_uri

from engine.clients.provider import OAuth2Tokens, ProviderClient, ProviderUrls, ReconnectResult
from engine.clients.transport import (
    Transport,
    checked_instance_id,
    checked_text,
    error_from_response,
)
from engine.config import ClientSettings
from engine.errors import MalformedResponseError, NotFoundApiError, PermanentApiError
from engine.security.crypto import MIN_SCRUB_LEN, secret_values
from engine.security.masking import is_secret_key
from engine.tracing import HttpTracer

#: Intuit's QuickBooks Online Accounting API hosts (production companies, sandbox companies).
QBO_API = "https://quickbooks.api.intuit.com"
QBO_SANDBOX_API = "https://sandbox-quickbooks.api.intuit.com"
#: Instances asked for per page of GET /instances (the platform's ``pageSize``).
LIST_PAGE_SIZE = 200
#: Pages of one listing read at most: a tag names one attempt's instance, so even one full page
#: means something is wrong; many more would be a server looping on its ``nextPage`` token.
LIST_MAX_PAGES = 50
_MAX_URL_CHARS = 8192


class TooManyPagesError(PermanentApiError):
    """A listing did not end within the client's page cap."""

    kind = "too_many_pages"


@dataclass(frozen=True)
class RequestToken:
    """An OAuth 1.0a request token and its secret (GET /elements/{key}/oauth/token)."""

    token: str
    secret: str

    def __repr__(self) -> str:
        return "RequestToken(<redacted>)"


class ElementsClient:
    """Calls of ``elements/api-v2`` used by the engine; thread-safe enough for a worker pool.

    ``requests.Session`` pools connections per host; each worker thread may share it (urllib3's
    pool is thread-safe), which keeps one keep-alive connection per concurrent step. The provider
    client (token refresh, OAuth1 Reconnect) shares the session and the transport.
    """

    def __init__(self, settings: ClientSettings, session: requests.Session | None = None, *,
                 page_size: int = LIST_PAGE_SIZE, max_pages: int = LIST_MAX_PAGES,
                 tracer: HttpTracer | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        # requests re-reads proxy and CA-bundle variables from the environment on every call (about
        # 1 ms of CPU, a third of a step; bench/README.md). Read them once, here, instead.
        if session is None:
            self.session.proxies.update(dict(settings.proxies))
            if settings.ca_bundle:
                self.session.verify = settings.ca_bundle
            self.session.trust_env = False
        self.transport = Transport(self.session, connect_timeout=settings.connect_timeout,
                                   read_timeout=settings.read_timeout, max_body_bytes=settings.max_body_bytes,
                                   tracer=tracer)  # one CLIENT span per call (the `otel` extra)
        self.transport.mount(pool_connections=4, pool_maxsize=32)
        self._headers = {"Accept": "application/json",
                         "Authorization": f"User {settings.user_secret}, Organization {settings.org_secret}"}
        self._base = settings.base_url.rstrip("/")
        self.page_size = page_size
        self.max_pages = max_pages
        urls = ProviderUrls.under(settings.provider_root) if settings.provider_root else ProviderUrls()
        self.provider = ProviderClient(self.transport, urls)

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds of one HTTP call."""
        return self.transport.timeouts

    def close(self) -> None:
        """Close pooled connections."""
        self.transport.close()

    # --- transport -------------------------------------------------------------------------------

    def _prepare(self, method: str, path: str, params: Any, body: Mapping[str, Any] | None,
                 headers: Mapping[str, str]) -> requests.PreparedRequest:
        """The request ``Session.request`` would send, prepared without its per-call merging.

        ``Session.request`` merges every session setting into each request (seven ``merge_setting``
        calls, whose runtime Protocol checks are slow on Python 3.11) and re-parses the URL it was
        given: 0.2 ms of CPU per call, a fifth of what a worker spends per attempt (bench/README.md).
        Here the URL is built from the validated base URL and encoded as requests encodes
        ``params``; headers, body and cookies go through ``PreparedRequest``'s own methods, and
        ``Session.send`` applies the session's proxies, TLS settings, adapters and cookie jar.
        """
        url = self._base + path
        if params:
            url = f"{url}?{urlencode(params, doseq=True)}"
        prep = requests.PreparedRequest()
        prep.prepare_method(method)
        prep.url = requote_uri(url)
        prep.prepare_headers({**self.session.headers, **headers})
        prep.prepare_body(None, None, json=body)
        if self.session.cookies:  # a load balancer's affinity cookie, say: sent back as requests would
            prep.prepare_cookies(self.session.cookies)
        return prep

    def _exchange(self, endpoint: str, method: str, path: str, *, params: Any = None,
                  body: Mapping[str, Any] | None = None) -> tuple[Any, Mapping[str, str]]:
        prep = self._prepare(method, path, params, body, self._headers)
        answer = self.transport.send(endpoint, prep)
        try:
            decoded = json.loads(answer.body) if answer.body else None
        except ValueError:
            decoded = None
            if answer.ok:
                raise MalformedResponseError(
                    "response is not JSON", endpoint=endpoint, status=answer.status
                ) from None
        if not answer.ok:
            raise error_from_response(endpoint, answer.status, decoded, answer.headers,
                                      sent=self._sent_secrets(params, body))
        return decoded, answer.headers

    def _sent_secrets(self, params: Any, body: Mapping[str, Any] | None) -> set[str]:
        """The secret values a request carried: the user and organization secrets, secret-named
        query parameters (``apiSecret``, ``requestToken``, the OAuth ``state``) and body values."""
        pairs = params.items() if isinstance(params, Mapping) else (params or ())
        found = {self.settings.user_secret, self.settings.org_secret}
        found |= {str(v) for k, v in pairs if is_secret_key(str(k)) or str(k).lower() == "state"}
        found |= secret_values(dict(body)) if body else set()
        return {v for v in found if len(v) >= MIN_SCRUB_LEN}

    def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One call; returns the decoded JSON or raises the matching ``ApiError``."""
        return self._exchange(endpoint, method, path, params=params, body=body)[0]

    @staticmethod
    def _instance(endpoint: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise MalformedResponseError("expected a JSON object", endpoint=endpoint, status=200)
        checked_instance_id(endpoint, value.get("id"))
        return dict(value)

    # --- API -------------------------------------------------------------------------------------

    def request_token(
        self, element: str, *, api_key: str, api_secret: str, callback_url: str
    ) -> RequestToken:
        """GET /elements/{key}/oauth/token (OAuth 1.0a only)."""
        data = self.request(
            "oauth_token",
            "GET",
            f"/elements/{element}/oauth/token",
            params={"apiKey": api_key, "apiSecret": api_secret, "callbackUrl": callback_url},
        )
        if not isinstance(data, dict):
            raise MalformedResponseError("expected a JSON object", endpoint="oauth_token", status=200)
        return RequestToken(checked_text("oauth_token", "token", data.get("token")),
                            checked_text("oauth_token", "secret", data.get("secret")))

    def oauth_url(self, element: str, params: Mapping[str, str]) -> str:
        """GET /elements/{key}/oauth/url with the flow's query parameters; returns the consent URL."""
        data = self.request("oauth_url", "GET", f"/elements/{element}/oauth/url", params=dict(params))
        if not isinstance(data, dict):
            raise MalformedResponseError("expected a JSON object", endpoint="oauth_url", status=200)
        url = checked_text("oauth_url", "oauthUrl", data.get("oauthUrl"), limit=_MAX_URL_CHARS)
        if not url.startswith(("http://", "https://")):
            raise MalformedResponseError("oauthUrl is not an http(s) URL", endpoint="oauth_url", status=200)
        return url

    def get_element(self, element: str) -> dict[str, Any]:
        """GET /elements/{key}: the element with its ``configuration`` entries (404: no such element)."""
        data = self.request("get_element", "GET", f"/elements/{element}")
        if not isinstance(data, dict):
            raise MalformedResponseError("expected a JSON object", endpoint="get_element", status=200)
        return dict(data)

    def create_instance(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /instances; returns the instance JSON (HTTP 200 on success, per the platform)."""
        data = self.request("create_instance", "POST", "/instances", body=body)
        return self._instance("create_instance", data)

    def find_instances_by_tag(self, tag: str) -> list[dict[str, Any]]:
        """Every instance tagged ``tag``, all pages of GET /instances?tags[]=tag (to adopt an
        instance a crashed step created: exactly-once needs every page, elements-api.md §14a)."""
        found: list[dict[str, Any]] = []
        next_page: str | None = None
        for _ in range(self.max_pages):
            params: list[tuple[str, str]] = [("tags[]", tag), ("pageSize", str(self.page_size))]
            if next_page:
                params.append(("nextPage", next_page))
            data, headers = self._exchange("list_instances", "GET", "/instances", params=params)
            if not isinstance(data, list):
                raise MalformedResponseError("expected a JSON array", endpoint="list_instances", status=200)
            found += [self._instance("list_instances", i) for i in data
                      if isinstance(i, dict) and tag in (i.get("tags") or [])]
            # A short or even empty page with a token is not the end: only a missing token is.
            next_page = headers.get("Elements-Next-Page-Token") or None
            if next_page is None:
                return found
        raise TooManyPagesError(
            f"GET /instances tagged {tag!r} did not end within {self.max_pages} pages of "
            f"{self.page_size}", endpoint="list_instances",
            hint="The platform keeps answering Elements-Next-Page-Token; remove stray instances with this "
                 "tag, or report the looping listing to the platform's support.")

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        """GET /instances/{id}."""
        data = self.request("get_instance", "GET", f"/instances/{instance_id}")
        return self._instance("get_instance", data)

    def delete_instance(self, instance_id: str) -> None:
        """DELETE /instances/{id}; a 404 means it is already gone, which is what the caller wanted."""
        try:
            self.request("delete_instance", "DELETE", f"/instances/{instance_id}")
        except NotFoundApiError:
            return

    def update_instance(
        self,
        instance_id: str,
        body: Mapping[str, Any],
        *,
        method: str = "PATCH",
        reauthenticate: bool = False,
    ) -> dict[str, Any]:
        """PATCH (or PUT) /instances/{id}; ``reauthenticate`` adds ``?reAuthenticate=true``."""
        params = {"reAuthenticate": "true"} if reauthenticate else None
        data = self.request("update_instance", method, f"/instances/{instance_id}", params=params, body=body)
        return self._instance("update_instance", data)

    # --- the provider (shares the session and the transport) --------------------------------------

    def refresh_oauth2(self, client_id: str, client_secret: str, refresh_token: str) -> OAuth2Tokens:
        """The OAuth2 refresh-token grant at the provider (see ``ProviderClient.refresh_oauth2``)."""
        return self.provider.refresh_oauth2(client_id, client_secret, refresh_token)

    def revoke_oauth2(self, client_id: str, client_secret: str, token: str) -> None:
        """Revoke a refresh token at the provider (see ``ProviderClient.revoke_oauth2``)."""
        self.provider.revoke_oauth2(client_id, client_secret, token)

    def reconnect_oauth1(self, consumer_key: str, consumer_secret: str, token: str,
                         token_secret: str) -> ReconnectResult:
        """QuickBooks OAuth1 Reconnect, signed (see ``ProviderClient.reconnect_oauth1``)."""
        return self.provider.reconnect_oauth1(consumer_key, consumer_secret, token, token_secret)

    def check_provider_token(self, realm_id: str, *, sandbox_company: bool, access_token: str | None = None,
                             oauth1: tuple[str, str, str, str] | None = None) -> bool:
        """Whether the provider still accepts the user's token, by a read that spends nothing (see
        ``ProviderClient.read_company_info``). The QuickBooks API host is the provider root when one
        is configured (the sandbox serves it there), else Intuit's production or sandbox-company host."""
        base = self.settings.provider_root or (QBO_SANDBOX_API if sandbox_company else QBO_API)
        return self.provider.read_company_info(base, realm_id, access_token=access_token, oauth1=oauth1)

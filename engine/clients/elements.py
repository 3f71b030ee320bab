"""The Cloud Elements client: one ``requests.Session``, timeouts, errors parsed into classes.

Messages built here never contain URLs, query strings or bodies, because those carry api secrets,
tokens and verifiers (GET /oauth/token takes ``apiSecret`` in its query string).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from requests.utils import requote_uri

from engine.config import ClientSettings
from engine.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidDatabaseError,
    MalformedResponseError,
    NotFoundApiError,
    ProviderRejectedError,
    RateLimitedError,
    ServiceUnavailableError,
)


@dataclass(frozen=True)
class RequestToken:
    """An OAuth 1.0a request token and its secret (GET /elements/{key}/oauth/token)."""

    token: str
    secret: str

    def __repr__(self) -> str:
        return "RequestToken(<redacted>)"


def retry_after_seconds(resp: requests.Response) -> float | None:
    """A numeric Retry-After header in seconds; None when absent or an HTTP date."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _text(value: Any, limit: int = 500) -> str | None:
    if value is None:
        return None
    return str(value)[:limit]


def error_from_response(
    endpoint: str, status: int, body: Any, resp: requests.Response | None = None
) -> ApiError:
    """Map a platform error answer to its ``ApiError`` subclass (public for tests)."""
    payload = body if isinstance(body, dict) else {}
    message = _text(payload.get("message")) or f"HTTP {status} without a JSON error body"
    provider = _text(payload.get("providerMessage"))
    request_id = _text(payload.get("requestId"), 64) or (
        resp.headers.get("Elements-Request-Id") if resp else None
    )
    kw: dict[str, Any] = dict(
        status=status, provider_message=provider, request_id=request_id, endpoint=endpoint
    )
    retry_after = retry_after_seconds(resp) if resp is not None else None
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServiceUnavailableError(message, retry_after=retry_after, **kw)
    if status == 400:
        if provider and "invalid_database" in provider:
            return InvalidDatabaseError(message, **kw)
        if provider:
            return ProviderRejectedError(message, **kw)
        return BadRequestError(message, **kw)
    if status == 401:
        return AuthenticationError(message, **kw)
    if status == 403:
        return ForbiddenError(message, **kw)
    if status == 404:
        return NotFoundApiError(message, **kw)
    if status == 409:
        return ConflictError(message, **kw)
    return BadRequestError(message, **kw)


class ElementsClient:
    """Calls of ``elements/api-v2`` used by the engine; thread-safe enough for a worker pool.

    ``requests.Session`` pools connections per host; each worker thread may share it (urllib3's
    pool is thread-safe), which keeps one keep-alive connection per concurrent step.
    """

    def __init__(self, settings: ClientSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # requests re-reads proxy and CA-bundle variables from the environment on every call (about
        # 1 ms of CPU, a third of a step; bench/README.md). Read them once, here, instead.
        if session is None:
            self.session.proxies.update(dict(settings.proxies))
            if settings.ca_bundle:
                self.session.verify = settings.ca_bundle
            self.session.trust_env = False
        self._auth = f"User {settings.user_secret}, Organization {settings.org_secret}"
        self._headers = {"Accept": "application/json", "Authorization": self._auth}
        self._plain_headers = {"Accept": "application/json"}
        self._base = settings.base_url.rstrip("/")
        from engine.clients.provider import ProviderClient, ProviderUrls  # noqa: PLC0415 - provider imports this module

        urls = ProviderUrls.under(settings.provider_root) if settings.provider_root else ProviderUrls()
        self.provider = ProviderClient(self.session, urls, (settings.connect_timeout, settings.read_timeout))
        self.refresh_oauth2 = self.provider.refresh_oauth2
        self.reconnect_oauth1 = self.provider.reconnect_oauth1

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds of one HTTP call."""
        return (self.settings.connect_timeout, self.settings.read_timeout)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    # --- transport -------------------------------------------------------------------------------

    def _read_body(self, resp: requests.Response, endpoint: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1 returns what has arrived (at most 64 KiB) instead of waiting for 64 KiB, so a
            # server dripping bytes cannot hold the step past the deadline.
            try:
                chunk = resp.raw.read1(65536, decode_content=True)  # gzip, as requests would
            except urllib3.exceptions.ReadTimeoutError:
                raise ApiTimeoutError("no answer within the timeout", endpoint=endpoint) from None
            except urllib3.exceptions.HTTPError as exc:
                raise ApiConnectionError(
                    f"answer broken off ({type(exc).__name__})", endpoint=endpoint
                ) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise MalformedResponseError(
                    f"response larger than {self.settings.max_body_bytes} bytes",
                    endpoint=endpoint,
                    status=resp.status_code,
                )
            if time.monotonic() > deadline:  # a slow drip resets the read timeout on every byte
                raise ApiTimeoutError(
                    "response body arrived too slowly", endpoint=endpoint, status=resp.status_code
                )
            chunks.append(chunk)

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

    def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        """One call; returns the decoded JSON or raises the matching ``ApiError``."""
        deadline = time.monotonic() + self.settings.connect_timeout + self.settings.read_timeout
        try:
            prep = self._prepare(method, path, params, body, self._headers if auth else self._plain_headers)
            timeout = (self.settings.connect_timeout, self.settings.read_timeout)
            resp = self.session.send(prep, timeout=timeout, stream=True)
            with resp:
                raw = self._read_body(resp, endpoint, deadline)
        except requests.Timeout:
            raise ApiTimeoutError("no answer within the timeout", endpoint=endpoint) from None
        except requests.ConnectionError as exc:
            # str(exc) would include the URL and its query (apiSecret): report only the class.
            raise ApiConnectionError(f"cannot connect ({type(exc).__name__})", endpoint=endpoint) from None
        except requests.RequestException as exc:
            raise ApiConnectionError(f"request failed ({type(exc).__name__})", endpoint=endpoint) from None
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
            if 200 <= resp.status_code < 300:
                raise MalformedResponseError(
                    "response is not JSON", endpoint=endpoint, status=resp.status_code
                ) from None
        if not 200 <= resp.status_code < 300:
            raise error_from_response(endpoint, resp.status_code, decoded, resp)
        return decoded

    @staticmethod
    def _expect(endpoint: str, value: Any, kind: type, *fields: str) -> Any:
        if not isinstance(value, kind):
            raise MalformedResponseError(f"expected a JSON {kind.__name__}", endpoint=endpoint, status=200)
        for f in fields:
            if (
                not isinstance(value, dict)
                or not isinstance(value.get(f), (str, int))
                or isinstance(value.get(f), bool)
            ):
                raise MalformedResponseError(
                    f"field {f!r} missing or not a string", endpoint=endpoint, status=200
                )
        return value

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
        self._expect("oauth_token", data, dict, "token", "secret")
        return RequestToken(str(data["token"]), str(data["secret"]))

    def oauth_url(self, element: str, params: Mapping[str, str]) -> str:
        """GET /elements/{key}/oauth/url with the flow's query parameters; returns the consent URL."""
        data = self.request("oauth_url", "GET", f"/elements/{element}/oauth/url", params=dict(params))
        self._expect("oauth_url", data, dict, "oauthUrl")
        url = str(data["oauthUrl"])
        if not url.startswith(("http://", "https://")):
            raise MalformedResponseError("oauthUrl is not an http(s) URL", endpoint="oauth_url", status=200)
        return url

    def create_instance(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /instances; returns the instance JSON (HTTP 200 on success, per the platform)."""
        data = self.request("create_instance", "POST", "/instances", body=body)
        return dict(self._expect("create_instance", data, dict, "id"))

    def find_instances_by_tag(self, tag: str) -> list[dict[str, Any]]:
        """GET /instances?tags[]=tag (used to adopt an instance a crashed step created)."""
        data = self.request("list_instances", "GET", "/instances", params=[("tags[]", tag)])
        self._expect("list_instances", data, list)
        return [i for i in data if isinstance(i, dict) and tag in (i.get("tags") or [])]

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        """GET /instances/{id}."""
        data = self.request("get_instance", "GET", f"/instances/{instance_id}")
        return dict(self._expect("get_instance", data, dict, "id"))

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
        return dict(self._expect("update_instance", data, dict, "id"))

    def delete_instance(self, instance_id: str) -> None:
        """DELETE /instances/{id}."""
        self.request("update_instance", "DELETE", f"/instances/{instance_id}")

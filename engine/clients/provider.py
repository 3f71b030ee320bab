"""Calls to the OAuth provider itself (not the platform): token refresh and OAuth1 Reconnect.

QuickBooks: OAuth2 refresh-token grant at Intuit's token endpoint (the refresh token rotates) and
the OAuth1 Reconnect API, which answers XML with an ``ErrorCode`` (elements-api.md §13.3).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import requests

from engine.clients.elements import error_from_response
from engine.errors import ApiConnectionError, ApiTimeoutError, MalformedResponseError, PermanentApiError

INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_RECONNECT_URL = "https://appcenter.intuit.com/api/v1/connection/reconnect"


class RenewalRejectedError(PermanentApiError):
    """The provider refused to renew (invalid_grant, Reconnect 270/22/24): re-authorisation needed."""

    kind = "renewal_rejected"


@dataclass(frozen=True)
class ProviderUrls:
    """Where the provider's endpoints are; the sandbox serves both under ``/_provider``."""

    oauth2_token: str = INTUIT_TOKEN_URL
    oauth1_reconnect: str = INTUIT_RECONNECT_URL

    @classmethod
    def under(cls, root: str) -> ProviderUrls:
        """Both endpoints below ``root`` (e.g. ``http://127.0.0.1:8040/_provider``)."""
        root = root.rstrip("/")
        return cls(f"{root}/oauth2/tokens/bearer", f"{root}/oauth1/reconnect")


@dataclass(frozen=True)
class OAuth2Tokens:
    """A refresh-token grant's answer."""

    access_token: str
    refresh_token: str
    expires_in: int

    def __repr__(self) -> str:
        return f"OAuth2Tokens(<redacted>, expires_in={self.expires_in})"


@dataclass(frozen=True)
class ReconnectResult:
    """Intuit Reconnect answer: ``code`` 0 means new ``token``/``secret``."""

    code: int
    message: str
    token: str = ""
    secret: str = ""

    def __repr__(self) -> str:
        return f"ReconnectResult(code={self.code}, message={self.message!r})"


class ProviderClient:
    """HTTP to the provider with the same error classes as the platform client."""

    def __init__(self, session: requests.Session, urls: ProviderUrls, timeout: tuple[float, float]) -> None:
        self.session = session
        self.urls = urls
        self.timeout = timeout
        # Every ElementsClient builds one of these: the earliest point at which the engine does HTTP,
        # so urllib3's DEBUG request lines (apiSecret in GET /oauth/token's query) are redacted
        # even for embedders that never go through the CLI.

    def _call(self, method: str, url: str, **kw: object) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kw)  # type: ignore[arg-type]
        except requests.Timeout:
            raise ApiTimeoutError("provider did not answer in time", endpoint="provider_token") from None
        except requests.RequestException as exc:
            raise ApiConnectionError(f"cannot reach the provider ({type(exc).__name__})",
                                     endpoint="provider_token") from None

    def refresh_oauth2(self, client_id: str, client_secret: str, refresh_token: str) -> OAuth2Tokens:
        """The refresh-token grant; ``invalid_grant``/``invalid_client`` raise ``RenewalRejectedError``."""
        resp = self._call("POST", self.urls.oauth2_token, auth=(client_id, client_secret),
                          data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                          headers={"Accept": "application/json"})
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code in (400, 401) and isinstance(body, dict) and body.get("error") in (
                "invalid_grant", "invalid_client"):
            raise RenewalRejectedError(f"provider answered {body['error']}", status=resp.status_code,
                                       endpoint="provider_token",
                                       hint="The user must re-authorise: run `provision reauthorize ID`.")
        if not resp.ok:
            raise error_from_response("provider_token", resp.status_code, body, resp)
        if not (isinstance(body, dict) and isinstance(body.get("access_token"), str)
                and isinstance(body.get("refresh_token"), str)):
            raise MalformedResponseError(
                "token answer lacks access_token/refresh_token",
                endpoint="provider_token",
                status=resp.status_code,
            )
        return OAuth2Tokens(body["access_token"], body["refresh_token"], int(body.get("expires_in") or 3600))

    def reconnect_oauth1(self, consumer_key: str, token: str) -> ReconnectResult:
        """QuickBooks OAuth1 Reconnect (in production the request is OAuth1-signed by the caller's keys)."""
        resp = self._call("GET", self.urls.oauth1_reconnect,
                          params={"oauth_consumer_key": consumer_key, "oauth_token": token})
        if not resp.ok:
            raise error_from_response("provider_token", resp.status_code, None, resp)
        try:
            root = ET.fromstring(resp.content[:100_000])
            code = int(root.findtext("ErrorCode") or "-1")
        except (ET.ParseError, ValueError):
            raise MalformedResponseError(
                "Reconnect answer is not the documented XML",
                endpoint="provider_token",
                status=resp.status_code,
            ) from None
        result = ReconnectResult(code, (root.findtext("ErrorMessage") or "")[:200],
                                 root.findtext("OAuthToken") or "", root.findtext("OAuthTokenSecret") or "")
        if code not in (0, 212):  # 22/24 not authorised, 270 token expired or rejected
            raise RenewalRejectedError(f"Reconnect error {code}: {result.message}", status=resp.status_code,
                                       endpoint="provider_token",
                                       hint="The user must re-authorise: run `provision reauthorize ID`.")
        return result

"""Calls to the OAuth provider itself (not the platform): token refresh and OAuth1 Reconnect.

QuickBooks: the OAuth2 refresh-token grant at Intuit's token endpoint (the refresh token rotates),
and the OAuth1 Reconnect API: a GET signed with OAuth 1.0a HMAC-SHA1 by the consumer key and secret
and the token and token secret, parameters in the ``Authorization: OAuth ...`` header (quickbooks-ruby
README "Reconnect", ``base_service.rb``), answered by namespaced XML
(``<ReconnectResponse xmlns="http://platform.intuit.com/api/v1">``, quickbooks-ruby
``access_token_response.rb``; elements-api.md §14a). Signing is ``requests-oauthlib``'s, parsing
``defusedxml``'s; nothing here is hand-written crypto or a plain XML parser.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
import requests
from defusedxml import DefusedXmlException

from engine.clients.transport import Answer, Transport, checked_text, error_from_response
from engine.errors import MalformedResponseError, PermanentApiError, ProvisionError

if TYPE_CHECKING:
    from requests_oauthlib import OAuth1

# oauthlib and requests-oauthlib log signature base strings, signing keys (consumer and token
# secrets) and the signed Authorization header at DEBUG: keep those records from ever being emitted,
# whatever level an embedder runs its root logger at (tests/security/test_security_leaks.py).
for _name in ("oauthlib", "requests_oauthlib"):
    logging.getLogger(_name).setLevel(logging.INFO)

INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_RECONNECT_URL = "https://appcenter.intuit.com/api/v1/connection/reconnect"
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
RECONNECT_NS = "http://platform.intuit.com/api/v1"
ENDPOINT = "provider_token"
REVOKE_ENDPOINT = "provider_revoke"
_REAUTHORIZE = "The user must re-authorise: run `provision reauthorize ID`."
_MAX_EXPIRES = 10 * 365 * 86400
#: Intuit's access-token lifetime, assumed when an answer's ``expires_in`` is missing or unreadable.
DEFAULT_EXPIRES_IN = 3600
log = logging.getLogger(__name__)


def lenient_seconds(body: dict[str, Any], field: str, default: int | None) -> int | None:
    """A lifetime field of a token answer, read leniently: it must never cost a rotated token.

    An int, a float or a numeric string ("3600", "3600.0") is a number of seconds; anything else,
    or a value outside 1 s to 10 years, is ``default``, logged with the field's name and type only
    (issue 16 item 1).
    """
    raw = body.get(field)
    if raw is None:
        return default
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str) and len(raw) <= 40:
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not 0 < value <= _MAX_EXPIRES:  # nan fails the comparison too
        log.warning("token answer: %s is not a number of seconds (%s); using %s", field,
                    type(raw).__name__, default)
        return default
    return int(value)


class RenewalRejectedError(PermanentApiError):
    """The provider refused to renew (invalid_grant, Reconnect 270): re-authorisation needed."""

    kind = "renewal_rejected"


class ProviderAuthorizationError(PermanentApiError):
    """The provider rejected the app's own credentials (``invalid_client``, Reconnect 22/24).

    A configuration error, not the user's: re-authorising the user cannot fix it.
    """

    kind = "provider_unauthorized"


@dataclass(frozen=True)
class ProviderUrls:
    """Where the provider's endpoints are; the sandbox serves both under ``/_provider``."""

    oauth2_token: str = INTUIT_TOKEN_URL
    oauth1_reconnect: str = INTUIT_RECONNECT_URL
    oauth2_revoke: str = INTUIT_REVOKE_URL

    @classmethod
    def under(cls, root: str) -> ProviderUrls:
        """Every endpoint below ``root`` (e.g. ``http://127.0.0.1:8040/_provider``)."""
        root = root.rstrip("/")
        return cls(f"{root}/oauth2/tokens/bearer", f"{root}/oauth1/reconnect",
                   f"{root}/oauth2/tokens/revoke")


@dataclass(frozen=True)
class OAuth2Tokens:
    """A refresh-token grant's answer.

    ``access_token`` is empty when the answer carried a new refresh token but no usable access
    token: the refresh token is already rotated, so it is kept, and the previous access token with it.
    """

    access_token: str
    refresh_token: str
    expires_in: int = DEFAULT_EXPIRES_IN
    refresh_expires_in: int | None = None  # ``x_refresh_token_expires_in``; None when absent or odd

    def __repr__(self) -> str:
        return f"OAuth2Tokens(<redacted>, expires_in={self.expires_in})"

    def rotated(self) -> dict[str, str]:
        """The instance configuration entries this answer replaces (the runner's write-ahead)."""
        fresh = {"oauth.user.refresh_token": self.refresh_token}
        if self.access_token:
            fresh["oauth.user.token"] = self.access_token
        return fresh


@dataclass(frozen=True)
class ReconnectResult:
    """Intuit Reconnect answer: ``code`` 0 means new ``token``/``secret``; 212: outside the window."""

    code: int
    message: str
    token: str = ""
    secret: str = ""

    def __repr__(self) -> str:
        return f"ReconnectResult(code={self.code}, message={self.message!r})"

    def rotated(self) -> dict[str, str]:
        """The instance configuration entries a renewal replaces; empty unless ``code`` is 0."""
        if self.code != 0:
            return {}
        return {"oauth.user.token": self.token, "oauth.user.token.secret": self.secret}


def oauth1_signer(consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> OAuth1:
    """requests' auth that signs a request with OAuth 1.0a HMAC-SHA1 in its Authorization header.

    requests-oauthlib is imported here, not at the top: with oauthlib it was a sixth of the start of
    ``provision list`` on a 2-core machine (0.11 of 0.62 s), which every command paid though only
    OAuth1 renewals and checks sign anything (tests/cli/test_cli_startup.py).
    """
    from requests_oauthlib import OAuth1  # noqa: PLC0415 - lazy: see the docstring

    return OAuth1(consumer_key, client_secret=consumer_secret, resource_owner_key=token,
                  resource_owner_secret=token_secret, signature_method="HMAC-SHA1",
                  signature_type="AUTH_HEADER")


def _json(answer: Answer) -> Any:
    try:
        return json.loads(answer.body) if answer.body else None
    except ValueError:
        return None


def _xml_field(root: Any, name: str) -> str:
    # Intuit answers in its namespace; an un-namespaced field is accepted too (older examples).
    node = root.find(f"{{{RECONNECT_NS}}}{name}")
    if node is None:
        node = root.find(name)
    return (node.text or "").strip() if node is not None else ""


class ProviderClient:
    """HTTP to the provider over the shared transport, with the platform client's error classes."""

    def __init__(self, transport: Transport, urls: ProviderUrls) -> None:
        self.transport = transport
        self.urls = urls

    def refresh_oauth2(self, client_id: str, client_secret: str, refresh_token: str) -> OAuth2Tokens:
        """The refresh-token grant; ``invalid_grant`` raises ``RenewalRejectedError``,
        ``invalid_client`` ``ProviderAuthorizationError``."""
        prep = self.transport.prepare(requests.Request(
            "POST", self.urls.oauth2_token, auth=(client_id, client_secret),
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Accept": "application/json"}))
        answer = self.transport.send(ENDPOINT, prep)
        body = _json(answer)
        error = body.get("error") if isinstance(body, dict) else None
        if answer.status in (400, 401) and error == "invalid_grant":
            raise RenewalRejectedError("provider answered invalid_grant", status=answer.status,
                                       endpoint=ENDPOINT, hint=_REAUTHORIZE)
        if answer.status in (400, 401) and error == "invalid_client":
            raise ProviderAuthorizationError(
                "provider answered invalid_client", status=answer.status, endpoint=ENDPOINT,
                hint="The provider rejected the app's client id/secret: check oauth.api.key and "
                     "oauth.api.secret of this attempt.")
        if not answer.ok:
            raise error_from_response(ENDPOINT, answer.status, body, answer.headers)
        if not isinstance(body, dict):
            raise MalformedResponseError("token answer is not a JSON object", endpoint=ENDPOINT,
                                         status=answer.status)
        # The presented refresh token is spent now: take the new one first (without it the answer
        # carries nothing usable), then read everything else leniently, so that no oddity of the
        # answer can drop a rotated token (issue 16 item 1).
        refresh = checked_text(ENDPOINT, "refresh_token", body.get("refresh_token"))
        try:
            access = checked_text(ENDPOINT, "access_token", body.get("access_token"))
        except ProvisionError as exc:
            log.warning("token answer: no usable access_token (%s); the new refresh token is kept",
                        exc.kind)
            access = ""
        return OAuth2Tokens(access, refresh,
                            lenient_seconds(body, "expires_in", DEFAULT_EXPIRES_IN) or DEFAULT_EXPIRES_IN,
                            lenient_seconds(body, "x_refresh_token_expires_in", None))

    def revoke_oauth2(self, client_id: str, client_secret: str, token: str) -> None:
        """Revoke a refresh token at the provider (Intuit's revoke endpoint, JSON ``{"token"}``).

        Revoking a token that is already revoked or unknown is not an error at Intuit (200), so
        repeating this after a crash is harmless; ``invalid_client`` raises
        ``ProviderAuthorizationError``.
        """
        prep = self.transport.prepare(requests.Request(
            "POST", self.urls.oauth2_revoke, auth=(client_id, client_secret), json={"token": token},
            headers={"Accept": "application/json"}))
        answer = self.transport.send(REVOKE_ENDPOINT, prep)
        body = _json(answer)
        if answer.status in (400, 401) and isinstance(body, dict) and body.get("error") == "invalid_client":
            raise ProviderAuthorizationError("provider answered invalid_client", status=answer.status,
                                             endpoint=REVOKE_ENDPOINT)
        if not answer.ok:
            raise error_from_response(REVOKE_ENDPOINT, answer.status, body, answer.headers)

    def reconnect_oauth1(self, consumer_key: str, consumer_secret: str, token: str,
                         token_secret: str) -> ReconnectResult:
        """QuickBooks OAuth1 Reconnect, OAuth 1.0a HMAC-SHA1 signed in the Authorization header.

        Returns codes 0 (renewed) and 212 (outside the 30-day window: wait for it). Raises
        ``RenewalRejectedError`` on 270 (expired: the user must re-authorise) and
        ``ProviderAuthorizationError`` on 22/24 (the signature or app was refused).
        """
        auth = oauth1_signer(consumer_key, consumer_secret, token, token_secret)
        prep = self.transport.prepare(requests.Request("GET", self.urls.oauth1_reconnect, auth=auth,
                                                       headers={"Accept": "application/xml"}))
        answer = self.transport.send(ENDPOINT, prep)
        if not answer.ok:
            raise error_from_response(ENDPOINT, answer.status, _json(answer), answer.headers)
        try:
            root = SafeET.fromstring(answer.body)
        except (SafeET.ParseError, ValueError, DefusedXmlException):
            raise MalformedResponseError("Reconnect answer is not the documented XML", endpoint=ENDPOINT,
                                         status=answer.status) from None
        message = _xml_field(root, "ErrorMessage")[:200]
        # New tokens in the answer mean Intuit renewed (the old token is dead): take them first,
        # whatever the rest of the answer looks like (issue 16 item 1).
        token, secret = _xml_field(root, "OAuthToken"), _xml_field(root, "OAuthTokenSecret")
        code = _reconnect_code(_xml_field(root, "ErrorCode"), renewed=bool(token and secret))
        if code == 0:
            token = checked_text(ENDPOINT, "OAuthToken", token)
            secret = checked_text(ENDPOINT, "OAuthTokenSecret", secret)
            return ReconnectResult(0, message, token, secret)
        if code == 212:
            return ReconnectResult(code, message)
        if code in (22, 24):
            raise ProviderAuthorizationError(
                f"Reconnect error {code}: {message}", status=answer.status, endpoint=ENDPOINT,
                hint="Intuit refused the signed call: check oauth.api.key / oauth.api.secret (consumer "
                     "key and secret) and oauth.user.token.secret of this attempt.")
        raise RenewalRejectedError(f"Reconnect error {code}: {message}", status=answer.status,
                                   endpoint=ENDPOINT, hint=_REAUTHORIZE)

    def read_company_info(self, api_base: str, realm_id: str, *, access_token: str | None = None,
                          oauth1: tuple[str, str, str, str] | None = None) -> bool:
        """Whether the provider still accepts the user's token: a QuickBooks CompanyInfo read.

        ``GET {api_base}/v3/company/{realmId}/companyinfo/{realmId}`` (Intuit's Accounting API
        "Read CompanyInfo") with ``access_token`` as a Bearer (OAuth2) or signed OAuth 1.0a with
        ``oauth1`` = (consumer key, consumer secret, token, token secret). Intuit's OAuth2 has no
        introspection endpoint, and the refresh grant would rotate (spend) the refresh token; a read
        spends and rotates nothing. True on 2xx, False on 401 (Intuit's ``AuthenticationFailed``,
        003200: revoked, expired or unknown token); any other answer raises as usual (5xx/429 are
        transient: no verdict).
        """
        endpoint = "provider_check"
        realm = quote(realm_id, safe="")
        url = f"{api_base.rstrip('/')}/v3/company/{realm}/companyinfo/{realm}"
        headers = {"Accept": "application/json"}
        auth: OAuth1 | None = None
        if oauth1 is not None:
            key, secret, token, token_secret = oauth1
            auth = oauth1_signer(key, secret, token, token_secret)
        elif access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        else:
            raise ValueError("read_company_info needs access_token or oauth1")
        prep = self.transport.prepare(requests.Request("GET", url, auth=auth, headers=headers))
        answer = self.transport.send(endpoint, prep)
        if answer.status == 401:
            return False
        if not answer.ok:
            raise error_from_response(endpoint, answer.status, _json(answer), answer.headers)
        return True

def _reconnect_code(text: str, *, renewed: bool) -> int:
    """Reconnect's ``ErrorCode``, leniently: "0", " 0 " and "0.0" are 0.

    An answer that carries a new token and secret is a renewal (code 0) even when its code is
    missing or unreadable; without them an unreadable code is a malformed answer.
    """
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e6:
        return int(value)
    if renewed:
        log.warning("Reconnect answer: ErrorCode is not a number but new tokens came; treated as 0")
        return 0
    raise MalformedResponseError("Reconnect answer is not the documented XML (no ErrorCode)",
                                 endpoint=ENDPOINT, status=200)

"""Fake Intuit OAuth1 Reconnect: ``GET /_provider/oauth1/reconnect`` (elements-api.md §13.3, §14a).

As Intuit documents it (quickbooks-ruby README "Reconnect", ``access_token_response.rb``):

- the call is an OAuth 1.0a HMAC-SHA1 signed GET, parameters in ``Authorization: OAuth ...``; the
  signature is verified with ``oauthlib``'s server-side ``SignatureOnlyEndpoint`` against the consumer
  secret and the token secret the sandbox issued. Unsigned or badly signed: ``ErrorCode`` 22
  "This API requires Authorization.";
- an unknown, revoked or expired token: 270; outside the last 30 days of the 180-day token: 212;
- success: 0 with a new ``OAuthToken``/``OAuthTokenSecret`` (the old pair dies at once);
- the answer is ``<ReconnectResponse xmlns="http://platform.intuit.com/api/v1">`` with ``ErrorMessage``,
  ``ErrorCode``, ``ServerTime``, and the tokens on success, HTTP 200 in every case.

The platform is *not* told about new tokens: the client must PUT/PATCH them into the instance.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header
from werkzeug.wrappers import Request, Response

from sandbox.defaults import OAUTH1_RECONNECT_WINDOW_S
from sandbox.store import AccessToken, Store
from sandbox.web import Context

NAMESPACE = "http://platform.intuit.com/api/v1"
MESSAGES = {
    22: "This API requires Authorization.",
    212: "Token Refresh Window Out of Bounds.",
    270: "OAuth Token rejected.",
}


class TokenValidator(RequestValidator):  # type: ignore[misc]  # oauthlib ships no type hints
    """Knows one token (the one the call names) and the consumer secret it was issued with."""

    enforce_ssl = False  # the sandbox serves plain HTTP on loopback

    def __init__(self, store: Store, token: AccessToken) -> None:
        super().__init__()
        self.store = store
        self.token = token

    # Intuit's keys and tokens contain characters (and lengths) outside oauthlib's defaults.
    def check_client_key(self, client_key: str) -> bool:
        return bool(client_key)

    def check_access_token(self, request_token: str) -> bool:
        return bool(request_token)

    def check_nonce(self, nonce: str) -> bool:
        return 0 < len(nonce) <= 128

    @property
    def dummy_client(self) -> str:
        return "dummy-client"

    @property
    def dummy_access_token(self) -> str:
        return "dummy-token"

    def validate_client_key(self, client_key: str, request: OAuthRequest) -> bool:
        return client_key == self.token.consumer_key

    def validate_access_token(self, client_key: str, token: str, request: OAuthRequest) -> bool:
        return token == self.token.token

    def get_client_secret(self, client_key: str, request: OAuthRequest) -> str:
        return self.token.consumer_secret

    def get_access_token_secret(self, client_key: str, token: str, request: OAuthRequest) -> str:
        return self.token.secret

    def validate_timestamp_and_nonce(self, client_key: str, timestamp: str, nonce: str,
                                     request: OAuthRequest, request_token: Any = None,
                                     access_token: Any = None) -> bool:
        key = (client_key, timestamp, nonce)
        with self.store.lock:
            if key in self.store.oauth1_nonces:  # a replayed signed call
                return False
            self.store.oauth1_nonces.add(key)
        return True


def reconnect_xml(code: int, now: float, token: str = "", secret: str = "") -> Response:
    """The documented namespaced answer (HTTP 200, like Intuit, whatever the code)."""
    server_time = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    message = f"<ErrorMessage>{escape(MESSAGES[code])}</ErrorMessage>" if code else "<ErrorMessage/>"
    tokens = (f"<OAuthToken>{escape(token)}</OAuthToken><OAuthTokenSecret>{escape(secret)}</OAuthTokenSecret>"
              if code == 0 else "")
    xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<ReconnectResponse xmlns="{NAMESPACE}">{message}'
           f"<ErrorCode>{code}</ErrorCode><ServerTime>{server_time}</ServerTime>{tokens}</ReconnectResponse>")
    return Response(xml, status=200, mimetype="application/xml")


def oauth_params(request: Request) -> dict[str, str]:
    header = request.headers.get("Authorization", "")
    if not header[:6].lower() == "oauth ":
        return {}
    try:
        return dict(parse_authorization_header(header))
    except ValueError:
        return {}


def reconnect(ctx: Context, request: Request) -> Response:
    """Renew an OAuth1 access token inside its last 30 days; the old token is invalidated."""
    store = ctx.store
    params = oauth_params(request)
    consumer_key, token_value = params.get("oauth_consumer_key", ""), params.get("oauth_token", "")
    if not consumer_key or not token_value or "oauth_signature" not in params:
        return reconnect_xml(22, store.now())
    with store.lock:
        token = store.access_tokens.get(token_value)
        now = store.now()
        if token is None or token.consumer_key != consumer_key:
            return reconnect_xml(270, now)
        endpoint = SignatureOnlyEndpoint(TokenValidator(store, token))
        valid, _ = endpoint.validate_request(request.url, request.method, request.get_data(as_text=True),
                                             dict(request.headers))
        if not valid:
            return reconnect_xml(22, now)
        if not token.valid or now >= token.expires_at:
            return reconnect_xml(270, now)
        if now < token.expires_at - OAUTH1_RECONNECT_WINDOW_S:
            return reconnect_xml(212, now)
        token.valid = False
        new = store.issue_access_token(consumer_key, token.consumer_secret, token.instance_id)
    return reconnect_xml(0, now, new.token, new.secret)

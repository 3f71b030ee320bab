"""Fake Intuit token endpoints (outside BASE_PATH, no platform auth).

* ``POST /_provider/oauth2/tokens/bearer``: refresh-token grant with HTTP Basic client credentials;
  the refresh token rotates (the presented one dies at once), 100 days rolling.
* ``GET /_provider/oauth1/reconnect``: QuickBooks OAuth1 Reconnect; allowed only within the last 30 days
  of the 180-day token; answers XML with ``ErrorCode`` 0 / 212 / 270 (HTTP 200 either way, like Intuit).

The platform is *not* told about new tokens: the client must PUT/PATCH them into the instance.
"""

from __future__ import annotations

import hmac
from html import escape

from werkzeug.wrappers import Request, Response

from sandbox.defaults import (
    OAUTH1_RECONNECT_WINDOW_S,
    OAUTH2_ACCESS_TOKEN_LIFETIME_S,
    OAUTH2_REFRESH_TOKEN_LIFETIME_S,
)
from sandbox.store import random_base62
from sandbox.web import Context, json_response

_RECONNECT_ERRORS = {
    22: "This API requires Authorization.",
    212: "Token Refresh Window Out of Bounds.",
    270: "OAuth Token rejected.",
}


def _oauth_error(error: str, status: int = 400) -> Response:
    return json_response({"error": error}, status)


def bearer(ctx: Context, request: Request) -> Response:
    """Exchange a refresh token for a new access token and a *new* refresh token."""
    if request.form.get("grant_type") != "refresh_token":
        return _oauth_error("unsupported_grant_type")
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return _oauth_error("invalid_client", 401)
    store = ctx.store
    with store.lock:
        record = store.refresh_tokens.get(request.form.get("refresh_token", ""))
        if record is None or not record.valid or record.expires_at <= store.now():
            return _oauth_error("invalid_grant")
        if not (hmac.compare_digest(record.client_id.encode(), auth.username.encode())
                and hmac.compare_digest(record.client_secret.encode(), (auth.password or "").encode())):
            return _oauth_error("invalid_client", 401)
        record.valid = False  # rotation: the presented token is spent even if the client never sees the reply
        new = store.issue_refresh_token(record.client_id, record.client_secret, record.instance_id)
    return json_response({
        "access_token": "eyJ" + random_base62(60),
        "refresh_token": new.token,
        "token_type": "bearer",
        "expires_in": OAUTH2_ACCESS_TOKEN_LIFETIME_S,
        "x_refresh_token_expires_in": OAUTH2_REFRESH_TOKEN_LIFETIME_S,
    })


def _reconnect_xml(code: int, token: str = "", secret: str = "") -> Response:
    message = f"<ErrorMessage>{escape(_RECONNECT_ERRORS[code])}</ErrorMessage>" if code else "<ErrorMessage/>"
    tokens = (f"<OAuthToken>{escape(token)}</OAuthToken><OAuthTokenSecret>{escape(secret)}</OAuthTokenSecret>"
              if code == 0 else "")
    xml = f"<ReconnectResponse><ErrorCode>{code}</ErrorCode>{message}{tokens}</ReconnectResponse>"
    return Response(xml, status=200, mimetype="application/xml")


def reconnect(ctx: Context, request: Request) -> Response:
    """Renew an OAuth1 access token inside its last 30 days; the old token is invalidated."""
    consumer_key = request.args.get("oauth_consumer_key", "")
    token_value = request.args.get("oauth_token", "")
    if not consumer_key or not token_value:
        return _reconnect_xml(22)
    store = ctx.store
    with store.lock:
        token = store.access_tokens.get(token_value)
        now = store.now()
        if token is None or not token.valid or token.consumer_key != consumer_key:
            return _reconnect_xml(270)
        if now >= token.expires_at:
            return _reconnect_xml(270)
        if now < token.expires_at - OAUTH1_RECONNECT_WINDOW_S:
            return _reconnect_xml(212)
        token.valid = False
        new = store.issue_access_token(consumer_key, token.instance_id)
    return _reconnect_xml(0, new.token, new.secret)

"""Fake Intuit OAuth2 endpoints (outside BASE_PATH, no platform auth), good enough for Intuit's own
``intuit-oauth`` ``AuthClient`` (elements-api.md §14a):

* ``GET /_provider/.well-known/openid_configuration``: the OpenID discovery document ``AuthClient``
  loads first (pass its URL as the ``environment``);
* ``POST /_provider/oauth2/tokens/bearer``: the ``authorization_code`` grant (codes from the consent
  page) and the ``refresh_token`` grant, both with HTTP Basic client credentials. The refresh token
  rotates (the presented one dies at once), 100 days rolling, capped at five years; answers carry
  ``x_refresh_token_expires_in`` and, when the client sends ``x-include-refresh-token-hard-expires-in:
  true``, ``x_refresh_token_hard_expires_in``. Errors: 400 ``invalid_grant``, 401 ``invalid_client``;
* ``POST /_provider/oauth2/tokens/revoke``: JSON ``{"token": ...}``, revokes a refresh token's chain.

Every refresh token presented is recorded (``Store.refresh_presentations``) so that tests can assert
that no party ever presents one twice.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.defaults import (
    CONSENT_PATH,
    OAUTH2_ACCESS_TOKEN_LIFETIME_S,
    PROVIDER_BEARER_PATH,
    PROVIDER_REVOKE_PATH,
)
from sandbox.store import RefreshToken, Store
from sandbox.web import Context, json_response

HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"


def _oauth_error(error: str, status: int = 400) -> Response:
    return json_response({"error": error}, status)


def _client(request: Request) -> tuple[str, str] | None:
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return None
    return auth.username, auth.password or ""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def token_answer(store: Store, refresh: RefreshToken, hard: bool) -> dict[str, Any]:
    """The token endpoint's success body for ``refresh`` (a new access token each time)."""
    now = store.now()
    body: dict[str, Any] = {
        "access_token": store.issue_bearer_token(refresh.token).token,
        "refresh_token": refresh.token,
        "token_type": "bearer",
        "expires_in": OAUTH2_ACCESS_TOKEN_LIFETIME_S,
        "x_refresh_token_expires_in": round(refresh.expires_at - now),
    }
    if hard:
        body["x_refresh_token_hard_expires_in"] = round(refresh.hard_expires_at - now)
    return body


def rotate(store: Store, presented: str, who: str, client: tuple[str, str] | None) -> RefreshToken | str:
    """Spend ``presented`` and issue its successor; or return the OAuth error name.

    ``client`` None skips the client check (the platform refreshing with the credentials it holds).
    Callers hold ``store.lock``.
    """
    store.refresh_presentations.append((presented, who, store.now()))
    record = store.refresh_tokens.get(presented)
    if record is None or not record.valid or record.expires_at <= store.now():
        return "invalid_grant"
    if client is not None and not (_same(record.client_id, client[0])
                                   and _same(record.client_secret, client[1])):
        return "invalid_client"
    record.valid = False  # rotation: the presented token is spent even if the caller never sees the reply
    return store.issue_refresh_token(record.client_id, record.client_secret, record.instance_id,
                                     hard_expires_at=record.hard_expires_at)


def _code_grant(store: Store, request: Request, client: tuple[str, str]) -> Response:
    with store.lock:
        code = store.codes.get(request.form.get("code", ""))
        if code is None or code.used:
            return _oauth_error("invalid_grant")
        if not _same(code.client_id, client[0]):
            return _oauth_error("invalid_client", 401)
        if request.form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            return _oauth_error("invalid_grant")
        code.used = True
        refresh = store.issue_refresh_token(client[0], client[1], None)
        return json_response(token_answer(store, refresh, request.headers.get(HARD_EXPIRY_HEADER) == "true"))


def bearer(ctx: Context, request: Request) -> Response:
    """The token endpoint: ``authorization_code`` and ``refresh_token`` grants."""
    grant_type = request.form.get("grant_type")
    if grant_type not in ("refresh_token", "authorization_code"):
        return _oauth_error("unsupported_grant_type")
    client = _client(request)
    if client is None:
        return _oauth_error("invalid_client", 401)
    store = ctx.store
    if grant_type == "authorization_code":
        return _code_grant(store, request, client)
    with store.lock:
        outcome = rotate(store, request.form.get("refresh_token", ""), "client", client)
        if isinstance(outcome, str):
            return _oauth_error(outcome, 401 if outcome == "invalid_client" else 400)
        return json_response(token_answer(store, outcome, request.headers.get(HARD_EXPIRY_HEADER) == "true"))


def revoke(ctx: Context, request: Request) -> Response:
    """Revoke a refresh token (Intuit accepts the access token too; the sandbox does not track those)."""
    client = _client(request)
    if client is None:
        return _oauth_error("invalid_client", 401)
    try:
        body = json.loads(request.get_data() or b"{}")
    except ValueError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        return _oauth_error("invalid_request")
    store = ctx.store
    with store.lock:
        record = store.refresh_tokens.get(token)
        if record is not None:
            if not _same(record.client_id, client[0]):
                return _oauth_error("invalid_client", 401)
            store.invalidate_token(token)  # the refresh token and the access tokens it issued
    return json_response({})


def discovery(ctx: Context, request: Request) -> Response:
    """The OpenID configuration ``intuit-oauth`` reads (the real one is at developer.intuit.com)."""
    root = request.host_url.rstrip("/")
    return json_response({
        "issuer": root,
        "authorization_endpoint": root + CONSENT_PATH,
        "token_endpoint": root + PROVIDER_BEARER_PATH,
        "revocation_endpoint": root + PROVIDER_REVOKE_PATH,
        "userinfo_endpoint": root + "/_provider/userinfo",
        "jwks_uri": root + "/_provider/jwks",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": ["com.intuit.quickbooks.accounting", "openid", "profile", "email"],
    })

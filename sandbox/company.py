"""Fake QuickBooks Accounting API read and the operator's token switch (issue 10/12 must-have 5).

* ``GET /_provider/v3/company/{realmId}/companyinfo/{realmId}``: Intuit's "Read CompanyInfo", the
  cheapest authorised read of the Accounting API. Authorised by an OAuth2 access token
  (``Authorization: Bearer ...``, one hour, from the token endpoint or a grant) or by an OAuth 1.0a
  HMAC-SHA1 signature over an OAuth1 access token (verified like Reconnect, ``sandbox.reconnect``).
  200 with ``{"CompanyInfo": {...}, "time"}``; a revoked, expired, unknown or badly signed token
  gets 401 with Intuit's ``AuthenticationFault`` (``message=AuthenticationFailed; errorCode=003200;
  statusCode=401``). The realm is not matched against the token (*invented* simplification: the
  sandbox does not bind every token to a company).
* ``POST /_sandbox/provider/tokens/invalidate`` with ``{"token": ...}``: the user disconnects the app
  at Intuit; the token (and the access tokens a refresh token issued) stop working. Answers
  ``{"invalidated": n}``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from oauthlib.oauth1 import SignatureOnlyEndpoint
from werkzeug.wrappers import Request, Response

from sandbox.reconnect import TokenValidator, oauth_params
from sandbox.store import Store
from sandbox.web import ApiError, Context, json_response, read_json_object

AUTH_FAILED = "message=AuthenticationFailed; errorCode=003200; statusCode=401"


def _fault(now: float) -> Response:
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).isoformat()
    response = json_response({"Fault": {"Error": [{"Message": AUTH_FAILED, "code": "3200"}],
                                        "type": "AuthenticationFault"}, "time": stamp}, 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="Intuit", error="invalid_token"'
    return response


def _authorised(store: Store, request: Request) -> bool:
    header = request.headers.get("Authorization", "")
    now = store.now()
    if header[:7].lower() == "bearer ":
        with store.lock:
            record = store.bearer_tokens.get(header[7:].strip())
            return record is not None and record.valid and now < record.expires_at
    params = oauth_params(request)
    with store.lock:
        token = store.access_tokens.get(params.get("oauth_token", ""))
        if token is None or "oauth_signature" not in params \
                or token.consumer_key != params.get("oauth_consumer_key"):
            return False
        valid, _ = SignatureOnlyEndpoint(TokenValidator(store, token)).validate_request(
            request.url, request.method, request.get_data(as_text=True), dict(request.headers))
        return bool(valid) and token.valid and now < token.expires_at


def company_info(ctx: Context, request: Request, realm_id: str, realm_again: str) -> Response:
    """Read CompanyInfo: 200 for a good token, 401 AuthenticationFault otherwise."""
    store = ctx.store
    if not _authorised(store, request):
        return _fault(store.now())
    if realm_id != realm_again:
        return json_response({"Fault": {"Error": [{"Message": "Object Not Found", "code": "610"}],
                                        "type": "ValidationFault"}}, 400)
    with store.lock:
        kind = store.realms.get(realm_id, "sandbox")
    return json_response({"CompanyInfo": {"Id": realm_id, "CompanyName": f"Sandbox Company ({kind})",
                                          "Country": "US"},
                          "time": datetime.fromtimestamp(store.now(), tz=timezone.utc).isoformat()})


def invalidate(ctx: Context, request: Request) -> Response:
    """``POST /_sandbox/provider/tokens/invalidate`` with ``{"token": "..."}``."""
    token = read_json_object(request).get("token")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "Give the token to invalidate as JSON {\"token\": \"...\"}")
    return json_response({"invalidated": ctx.store.invalidate_token(token)})

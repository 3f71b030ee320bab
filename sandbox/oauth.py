"""``GET /elements/{key}/oauth/token`` and ``GET|POST /elements/{key}/oauth/url`` (elements-api.md §1, §2)."""

from __future__ import annotations

from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from sandbox.defaults import CONSENT_PATH
from sandbox.store import RequestToken, random_base62
from sandbox.urls import add_query
from sandbox.web import (
    ApiError,
    Context,
    check_auth,
    flat_params,
    json_response,
    missing,
    read_json,
    require_element,
)

_TOKEN_PARAMS = ("apiKey", "apiSecret", "callbackUrl")


def _require(params: dict[str, object], names: tuple[str, ...]) -> None:
    absent = missing(params, names)
    if absent:
        raise ApiError(400, f"Missing required query parameters: {', '.join(absent)}")


def oauth_token(ctx: Context, request: Request, key: str) -> Response:
    """Issue an OAuth1 request token (OAuth1 elements only)."""
    check_auth(request, ctx.secrets, optional=True)
    element = require_element(key)
    params = flat_params(request.args)
    if element.flow_for(params) != "oauth1":
        raise ApiError(400, f"Retrieving an OAuth 1 request token is not applicable to the OAuth 2 "
                            f"element '{element.key}'; call /elements/{element.key}/oauth/url directly")
    _require(params, _TOKEN_PARAMS)
    store = ctx.store
    with store.lock:
        token = RequestToken("qyprd" + random_base62(40), random_base62(36), element.key,
                             str(params["apiKey"]), str(params["callbackUrl"]), store.now())
        store.request_tokens[token.token] = token
    return json_response({"token": token.token, "secret": token.secret})


def oauth_url(ctx: Context, request: Request, key: str) -> Response:
    """Answer the provider authorization URL, pointing at this sandbox's consent page."""
    check_auth(request, ctx.secrets, optional=True)
    element = require_element(key)
    body = read_json(request) if request.method == "POST" else None
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    params = flat_params(request.args, body)
    flow = element.flow_for(params)
    state = str(params.get("state") or element.key)
    callback = str(params.get("callbackUrl") or "")
    root = request.host_url.rstrip("/")  # the Host the client used, so the URL works from its side
    if flow == "oauth1":
        _require(params, ("apiKey", "apiSecret", "callbackUrl", "requestToken"))
        with ctx.store.lock:
            token = ctx.store.request_tokens.get(str(params["requestToken"]))
        if token is None or token.element_key != element.key:
            raise ApiError(400, f"Invalid requestToken '{params['requestToken']}': it was not issued by "
                                f"GET /elements/{element.key}/oauth/token")
        if token.api_key != str(params["apiKey"]):
            raise ApiError(400, "apiKey does not match the apiKey the requestToken was issued for")
        # Like the platform, carry the state inside oauth_callback (elements-api.md §2).
        query = {"oauth_token": token.token, "oauth_callback": add_query(callback, {"state": state})}
    else:
        _require(params, _TOKEN_PARAMS)
        query = {"response_type": "code", "client_id": str(params["apiKey"]), "redirect_uri": callback,
                 "state": state, "scope": str(params.get("scope") or element.default_scope),
                 # Not in Intuit's URL: tells the consent page which provider it is playing (realmId
                 # is only added to QuickBooks redirects).
                 "element": element.key}
    return json_response({"element": element.key, "oauthUrl": f"{root}{CONSENT_PATH}?{urlencode(query)}"})

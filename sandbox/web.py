"""HTTP helpers shared by the handlers: request ids, JSON/HTML responses, errors, the auth header."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from sandbox.catalog import Element, find_element
from sandbox.faults import Faults
from sandbox.store import Store

INVALID_AUTH = "Invalid Organization or User secret, or invalid Element token provided."
REQUEST_ID_HEADER = "Elements-Request-Id"


def new_request_id(now: float) -> str:
    """24 hex chars shaped like a Mongo ObjectId: 8 hex of epoch seconds, then 16 random hex."""
    return f"{int(now) & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"


class ApiError(Exception):
    """A platform (or provider, when ``provider_message`` is set) error answered as JSON."""

    def __init__(self, status: int, message: str, provider_message: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.provider_message = provider_message
        self.headers = dict(headers or {})

    def to_response(self, request_id: str) -> Response:
        """The error body of elements-api.md §0.3."""
        body: dict[str, Any] = {"requestId": request_id, "message": self.message}
        if self.provider_message is not None:
            body["providerMessage"] = self.provider_message
        response = json_response(body, self.status)
        response.headers.update(self.headers)
        return response


def provider_error(provider_message: str) -> ApiError:
    """A 400 relaying an Intuit rejection (``message: "Bad Request"`` + ``providerMessage``)."""
    return ApiError(400, "Bad Request", provider_message)


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


@dataclass(frozen=True)
class Secrets:
    """The user and organization secrets the platform endpoints accept."""

    user: str
    org: str


@dataclass
class Context:
    """What every handler gets: the state, the accepted secrets and the fault rules."""

    store: Store
    secrets: Secrets
    faults: Faults
    #: Instances per page of GET /instances when the caller gives no ``pageSize``.
    page_size: int = 200
    #: Run the platform's due token refreshes before every request (see ``sandbox.platform_refresh``).
    auto_refresh: bool = False
    #: Cut GET /instances pages from *all* instances, then filter each page (pages may come back short,
    #: even empty, with a next-page token). A stress mode, not a documented platform behaviour: it puts
    #: a match on a late page, which a client must still find by following every token.
    filter_after_paging: bool = False


def parse_authorization(value: str) -> dict[str, str]:
    """Split ``User u, Organization o[, Element t]`` into ``{"user": u, "organization": o, ...}``.

    Part order is not significant and scheme names are matched case-insensitively (elements-api.md §0.1).
    """
    parts: dict[str, str] = {}
    for chunk in value.split(","):
        scheme, _, secret = chunk.strip().partition(" ")
        if scheme and secret.strip():
            parts[scheme.lower()] = secret.strip()
    return parts


def check_auth(request: Request, expected: Secrets, *, optional: bool = False) -> None:
    """Raise a 401 unless the Authorization header carries the right secrets.

    With ``optional`` a request without the header passes (oauth/token, oauth/url), but a header that
    is present must still be valid.
    """
    header = request.headers.get("Authorization")  # werkzeug headers are case-insensitive
    if header is None and optional:
        return
    parts = parse_authorization(header or "")
    user_ok = hmac.compare_digest(parts.get("user", "").encode(), expected.user.encode())
    org_ok = hmac.compare_digest(parts.get("organization", "").encode(), expected.org.encode())
    if not (user_ok and org_ok):
        raise ApiError(401, INVALID_AUTH)


def require_element(key_or_id: str) -> Element:
    """The element for a path or body key, or a 404 naming it."""
    element = find_element(key_or_id)
    if element is None:
        raise ApiError(404, f"No element found with key '{key_or_id}'")
    return element


def read_json(request: Request) -> Any:
    """The request body parsed as JSON (``None`` when empty); 400 if it is not JSON."""
    data = request.get_data()
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise ApiError(400, "Request body is not valid JSON") from None


def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise."""
    body = read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def flat_params(args: MultiDict[str, str], body: Any = None) -> dict[str, Any]:
    """Query parameters (first value each) overlaid with a JSON object body, if any."""
    params: dict[str, Any] = {key: args.get(key) for key in args}
    if isinstance(body, dict):
        params.update(body)
    return params


def missing(params: Mapping[str, Any], names: tuple[str, ...]) -> list[str]:
    """The names whose value is absent, null or empty."""
    return [name for name in names if params.get(name) in (None, "")]


def body_for_log(request: Request) -> Any:
    """The body as the request log records it: JSON, else a form dict, else None."""
    try:
        data = request.get_data()  # cached by the app before the handler ran
    except HTTPException:  # too large to read: answered 413, logged without its body
        return None
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        pass
    if request.mimetype == "application/x-www-form-urlencoded":
        return request.form.to_dict()
    return None

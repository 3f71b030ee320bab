"""``GET /elements/{keyOrId}`` and ``GET /elements/{keyOrId}/metadata`` (churros ``elements.js``,
``metadata.js``; ce-sdkifier): the element and the configuration it requires, per authentication type."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.catalog import Element
from sandbox.provisioning import SANDBOX_FLAGS, required_entries
from sandbox.web import Context, check_auth, json_response, require_element

_LABELS = {
    "oauth.api.key": "API Key", "oauth.api.secret": "API Secret", "oauth.callback.url": "Callback URL",
    "oauth.user.token": "User Token", "oauth.user.token.secret": "User Token Secret",
    "oauth.user.refresh_token": "Refresh Token", "quickbooks.realm.id": "Realm Id",
    "authentication.type": "Authentication Type",
}


def _entry(key: str, required: bool, default: str | None = None) -> dict[str, Any]:
    return {"key": key, "name": _LABELS.get(key, key), "type": "TEXTFIELD_32", "required": required,
            "defaultValue": default, "hideFromConsole": False}


def configuration(element: Element) -> list[dict[str, Any]]:
    """The element's configuration entries: required ones for the consent flow, optional others."""
    required = required_entries(element, "oauth1" if element.oauth1 else "oauth2",
                                "oauth1" if element.oauth1 else "oauth2")
    entries = [_entry(key, True) for key in required]
    # The entries of an instance created from existing tokens (the quick flow), optional here.
    for auth in ("oauth1", "oauth2") if element.oauth1 else ("oauth2",):
        entries += [_entry(key, False) for key in required_entries(element, "quick", auth)
                    if key not in {e["key"] for e in entries}]
    if element.oauth1:
        entries.append(_entry("authentication.type", False, "oauth1"))
    if element.has_realm:  # QuickBooks: the sandbox-company switch (devportal quickbooksonline/tips.md)
        entries += [_entry(flag, False, "false") for flag in SANDBOX_FLAGS]
    return entries


def get_element(ctx: Context, request: Request, key: str) -> Response:
    """The element with its ``configuration`` list."""
    check_auth(request, ctx.secrets)
    element = require_element(key)
    return json_response({**element.to_json(), "configuration": configuration(element)})


def element_metadata(ctx: Context, request: Request, key: str) -> Response:
    """The element's metadata: authentication types and configuration."""
    check_auth(request, ctx.secrets)
    element = require_element(key)
    types = ["oauth1", "oauth2"] if element.oauth1 else ["oauth2"]
    return json_response({"id": element.id, "key": element.key, "name": element.name,
                          "authentication": {"types": types}, "configuration": configuration(element),
                          "events": {"supported": False}})

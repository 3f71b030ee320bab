"""``/instances`` handlers: create (§4), list (§5), get (§6), PUT (§7), PATCH (§8), DELETE (§9)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.catalog import Element
from sandbox.defaults import MASK
from sandbox.provisioning import (
    adopt_external_tokens,
    check_company,
    check_required,
    consume_oauth1,
    consume_oauth2,
    flow_of,
    grant,
    instance_json,
    new_instance_token,
    normalize_config,
    required_entries,
    sanitize,
)
from sandbox.store import Instance
from sandbox.web import ApiError, Context, check_auth, json_response, read_json_object, require_element

NOT_FOUND = "Invalid Element Instance Id provided."
MAX_PAGE_SIZE = 500
PAGE_HEADERS = ("Elements-Next-Page-Token", "Elements-Returned-Count", "Elements-Total-Count")


def _element_of(body: Mapping[str, Any], key: str | None) -> Element:
    if key is not None:
        return require_element(key)
    ref = body.get("element")
    if not isinstance(ref, Mapping) or not (ref.get("key") or ref.get("id")):
        raise ApiError(400, "Missing element: give element.key (or element.id) in the body, "
                            "or POST to /elements/{key}/instances")
    return require_element(str(ref.get("key") or ref.get("id")))


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "tags must be a list of strings")
    return [sanitize(tag) for tag in value]


def _config(body: Mapping[str, Any]) -> dict[str, str | None]:
    config = body.get("configuration") or {}
    if not isinstance(config, Mapping):
        raise ApiError(400, "configuration must be a JSON object")
    return normalize_config(config)


def _provider_data(body: Mapping[str, Any]) -> Mapping[str, Any]:
    data = body.get("providerData") or {}
    if not isinstance(data, Mapping):
        raise ApiError(400, "providerData must be a JSON object")
    return data


def create_instance(ctx: Context, request: Request, key: str | None = None) -> Response:
    """``POST /instances`` and ``POST /elements/{key}/instances``."""
    check_auth(request, ctx.secrets)
    body = read_json_object(request)
    element = _element_of(body, key)
    config = _config(body)
    external = "initial" if body.get("externalAuthentication") == "initial" else "none"
    flow, auth_type = flow_of(element, external, config)
    check_required(config, required_entries(element, flow, auth_type))
    api_key = config.get("oauth.api.key") or ""
    store = ctx.store
    with store.lock:  # validate, consume and create atomically
        realm: str | None
        if flow == "oauth1":
            realm = consume_oauth1(store, _provider_data(body), api_key)
        elif flow == "oauth2":
            realm = consume_oauth2(store, _provider_data(body), api_key)
        else:
            realm = config.get("quickbooks.realm.id")
        check_company(store, element, config, realm)
        instance = Instance(store.next_instance_id(), sanitize(body.get("name") or element.key),
                            new_instance_token(), element.key, flow, _tags(body.get("tags")), config,
                            external, store.now())
        if flow == "quick":
            adopt_external_tokens(store, instance, auth_type)
        else:
            grant(store, instance, auth_type, realm)
        store.instances[instance.id] = instance
        return json_response(instance_json(instance))


def _page_size(request: Request, default: int) -> int:
    text = request.args.get("pageSize")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise ApiError(400, f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _offset(request: Request) -> int:
    token = request.args.get("nextPage")
    if not token:
        return 0
    try:  # opaque to clients; the sandbox encodes the offset of the next page
        return int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
    except ValueError:
        raise ApiError(400, f"Invalid nextPage token '{token}'") from None


def list_instances(ctx: Context, request: Request, key: str | None = None) -> Response:
    """``GET /instances[?tags[]=..]``: instances carrying every given tag, one page at a time.

    Paged as the platform pages (churros ``headers.js``, ce-sdkifier ``platformSDK.js``): ``pageSize``
    and ``nextPage`` in, ``Elements-Next-Page-Token`` (when more follow), ``Elements-Returned-Count``
    and ``Elements-Total-Count`` out.
    """
    check_auth(request, ctx.secrets)
    element = require_element(key) if key is not None else None
    wanted = set(request.args.getlist("tags[]") + request.args.getlist("tags"))
    size, offset = _page_size(request, ctx.page_size), _offset(request)
    def wanted_by(i: Instance) -> bool:
        return wanted <= set(i.tags) and (element is None or i.element_key == element.key)

    with ctx.store.lock:
        ordered = sorted(ctx.store.instances.values(), key=lambda i: i.id)
        if ctx.filter_after_paging:  # sparse pages: cut first, filter each page (see Context)
            listed = ordered
            page = [instance_json(i) for i in listed[offset:offset + size] if wanted_by(i)]
        else:
            listed = [i for i in ordered if wanted_by(i)]
            page = [instance_json(i) for i in listed[offset:offset + size]]
    response = json_response(page)
    headers = {"Elements-Returned-Count": str(len(page)), "Elements-Total-Count": str(len(listed))}
    if offset + size < len(listed):
        headers["Elements-Next-Page-Token"] = base64.urlsafe_b64encode(
            f"offset:{offset + size}".encode()).decode()
    response.headers.update(headers)
    response.headers["Access-Control-Expose-Headers"] = ", ".join(PAGE_HEADERS)
    return response


def _instance(ctx: Context, instance_id: str, key: str | None) -> Instance:
    try:
        number = int(instance_id)
    except ValueError:
        raise ApiError(404, NOT_FOUND) from None
    instance = ctx.store.instances.get(number)
    if instance is None or (key is not None and require_element(key).key != instance.element_key):
        raise ApiError(404, NOT_FOUND)
    return instance


def get_instance(ctx: Context, request: Request, instance_id: str, key: str | None = None) -> Response:
    """``GET /instances/{id}``."""
    check_auth(request, ctx.secrets)
    with ctx.store.lock:
        return json_response(instance_json(_instance(ctx, instance_id, key)))


def _merge(instance: Instance, update: Mapping[str, str | None], *, replace: bool) -> dict[str, str | None]:
    # A client that GETs an instance and sends it back sends the masks: keep the real values then.
    merged = {} if replace else dict(instance.configuration)
    for name, value in update.items():
        merged[name] = instance.configuration.get(name) if value == MASK else value
    return merged


def _reauthenticate(ctx: Context, instance: Instance, provider_data: Mapping[str, Any]) -> None:
    element = require_element(instance.element_key)
    auth_type = element.flow_for(instance.configuration)
    api_key = instance.configuration.get("oauth.api.key") or ""
    if auth_type == "oauth1":
        realm: str | None = consume_oauth1(ctx.store, provider_data, api_key)
    else:
        realm = consume_oauth2(ctx.store, provider_data, api_key)
    check_company(ctx.store, element, instance.configuration, realm)
    grant(ctx.store, instance, auth_type, realm)


def update_instance(ctx: Context, request: Request, instance_id: str, key: str | None = None) -> Response:
    """``PUT`` (replace the given fields) / ``PATCH`` (tags replaced, configuration merged).

    A body with ``providerData`` re-authenticates (``?reAuthenticate=true`` is accepted but not
    required); the response never contains ``providerData``.
    """
    check_auth(request, ctx.secrets)
    body = read_json_object(request)
    with ctx.store.lock:
        instance = _instance(ctx, instance_id, key)
        name = sanitize(body["name"]) if body.get("name") else instance.name
        tags = _tags(body["tags"]) if "tags" in body else instance.tags
        config = instance.configuration
        if "configuration" in body:
            config = _merge(instance, _config(body), replace=request.method == "PUT")
        provider_data = _provider_data(body)
        # Work on a copy so that a rejected re-authentication changes nothing.
        draft = Instance(**{**vars(instance), "name": name, "tags": tags, "configuration": dict(config)})
        if provider_data:
            _reauthenticate(ctx, draft, provider_data)
        ctx.store.instances[instance.id] = draft
        return json_response(instance_json(draft))


def delete_instance(ctx: Context, request: Request, instance_id: str, key: str | None = None) -> Response:
    """``DELETE /instances/{id}`` -> 200 ``{}``."""
    check_auth(request, ctx.secrets)
    with ctx.store.lock:
        instance = _instance(ctx, instance_id, key)
        del ctx.store.instances[instance.id]
    return json_response({})

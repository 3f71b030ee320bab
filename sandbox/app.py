"""The WSGI application: routing, fault injection, the request log and the inspection endpoints.

Per request: match the route -> maybe inject a failure (no effect performed) -> run the handler (the
effect) -> stamp ``Elements-Request-Id`` -> log -> hold the response for the configured delay.
A ``before`` delay instead holds the request before the effect, which then happens even if the client
gave up meanwhile: a slow platform that commits after the client's read timeout (issue 16 item 8).
Holding *after* the effect is deliberate: a client killed during the delay leaves the effect committed,
which is exactly the crash window the engine's adopt-by-tag logic must survive (DESIGN.md §4).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from sandbox import company, consent, elements, instances, oauth, platform_refresh, provider, reconnect
from sandbox.defaults import (
    BASE_PATH,
    CONSENT_PATH,
    FAULTS_PATH,
    HEALTH_PATH,
    INSTANCE_STATUS_PATH,
    PLATFORM_REFRESH_PATH,
    PROVIDER_BEARER_PATH,
    PROVIDER_COMPANY_INFO_PATH,
    PROVIDER_DISCOVERY_PATH,
    PROVIDER_RECONNECT_PATH,
    PROVIDER_REVOKE_PATH,
    REQUESTS_PATH,
    TOKEN_INVALIDATE_PATH,
)
from sandbox.faults import Faults, patch_body
from sandbox.web import (
    REQUEST_ID_HEADER,
    ApiError,
    Context,
    body_for_log,
    json_response,
    new_request_id,
    read_json,
)

log = logging.getLogger(__name__)
Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """A handler and the fault endpoint name it answers to (None: never faulted, never logged)."""

    handler: Handler
    endpoint: str | None
    logged: bool = True


def _health(ctx: Context, request: Request) -> Response:
    return json_response({"status": "ok"})


def _requests(ctx: Context, request: Request) -> Response:
    if request.method == "DELETE":
        ctx.store.clear_requests()
        return json_response({})
    return json_response(ctx.store.requests())


def _faults(ctx: Context, request: Request) -> Response:
    if request.method == "POST":
        try:
            ctx.faults.load_json(read_json(request))
        except ValueError as exc:
            raise ApiError(400, f"Invalid faults: {exc}") from None
    return json_response(ctx.faults.to_json())


ROUTES: dict[str, Route] = {
    "oauth_token": Route(oauth.oauth_token, "oauth_token"),
    "oauth_url": Route(oauth.oauth_url, "oauth_url"),
    "create_instance": Route(instances.create_instance, "create_instance"),
    "list_instances": Route(instances.list_instances, "list_instances"),
    "get_instance": Route(instances.get_instance, "list_instances"),
    "update_instance": Route(instances.update_instance, "update_instance"),
    "delete_instance": Route(instances.delete_instance, "update_instance"),
    "consent": Route(consent.consent, "consent"),
    "get_element": Route(elements.get_element, None),
    "element_metadata": Route(elements.element_metadata, None),
    "provider_bearer": Route(provider.bearer, "provider_token"),
    "provider_revoke": Route(provider.revoke, "provider_token"),
    "provider_discovery": Route(provider.discovery, None),
    "provider_reconnect": Route(reconnect.reconnect, "provider_token"),
    "platform_refresh": Route(platform_refresh.platform_refresh, None),
    "instance_status": Route(platform_refresh.instance_status, None),
    "provider_company_info": Route(company.company_info, "provider_check"),
    "token_invalidate": Route(company.invalidate, None),
    "health": Route(_health, None, logged=False),
    "requests": Route(_requests, None, logged=False),
    "faults": Route(_faults, None, logged=False),
}


def _rules() -> list[Rule]:
    b = BASE_PATH
    rules = [
        Rule(f"{b}/elements/<key>/oauth/token", methods=["GET"], endpoint="oauth_token"),
        Rule(f"{b}/elements/<key>/oauth/url", methods=["GET", "POST"], endpoint="oauth_url"),
        Rule(CONSENT_PATH, methods=["GET", "POST"], endpoint="consent"),
        Rule(PROVIDER_BEARER_PATH, methods=["POST"], endpoint="provider_bearer"),
        Rule(PROVIDER_RECONNECT_PATH, methods=["GET"], endpoint="provider_reconnect"),
        Rule(PROVIDER_REVOKE_PATH, methods=["POST"], endpoint="provider_revoke"),
        Rule(PROVIDER_DISCOVERY_PATH, methods=["GET"], endpoint="provider_discovery"),
        Rule(PLATFORM_REFRESH_PATH, methods=["POST"], endpoint="platform_refresh"),
        Rule(INSTANCE_STATUS_PATH, methods=["POST"], endpoint="instance_status"),
        Rule(PROVIDER_COMPANY_INFO_PATH, methods=["GET"], endpoint="provider_company_info"),
        Rule(TOKEN_INVALIDATE_PATH, methods=["POST"], endpoint="token_invalidate"),
        Rule(f"{b}/elements/<key>", methods=["GET"], endpoint="get_element"),
        Rule(f"{b}/elements/<key>/metadata", methods=["GET"], endpoint="element_metadata"),
        Rule(HEALTH_PATH, methods=["GET"], endpoint="health"),
        Rule(f"{b}{HEALTH_PATH}", methods=["GET"], endpoint="health"),
        Rule(REQUESTS_PATH, methods=["GET", "DELETE"], endpoint="requests"),
        Rule(FAULTS_PATH, methods=["GET", "POST"], endpoint="faults"),
    ]
    # Instances are reachable both directly and under an element (elements-api.md §4, §5, §7).
    for prefix in (f"{b}/instances", f"{b}/elements/<key>/instances"):
        rules += [
            Rule(prefix, methods=["POST"], endpoint="create_instance"),
            Rule(f"{prefix}/", methods=["POST"], endpoint="create_instance"),  # elements-connect's form
            Rule(prefix, methods=["GET"], endpoint="list_instances"),
            Rule(f"{prefix}/", methods=["GET"], endpoint="list_instances"),
            Rule(f"{prefix}/<instance_id>", methods=["GET"], endpoint="get_instance"),
            Rule(f"{prefix}/<instance_id>", methods=["PUT", "PATCH"], endpoint="update_instance"),
            Rule(f"{prefix}/<instance_id>", methods=["DELETE"], endpoint="delete_instance"),
        ]
    return rules


class SandboxApp:
    """The sandbox as a WSGI callable."""

    def __init__(self, ctx: Context, stopping: threading.Event | None = None) -> None:
        self.ctx = ctx
        self.url_map = Map(_rules())
        # Set on shutdown so that held (delayed) responses are released promptly.
        self.stopping = stopping or threading.Event()

    @property
    def faults(self) -> Faults:
        """The fault rules in force."""
        return self.ctx.faults

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = 1 << 20
        request_id = new_request_id(self.ctx.store.now())
        route: Route | None = None
        try:
            request.get_data()  # cache the body so both the handler and the log can read it
            if self.ctx.auto_refresh:
                platform_refresh.refresh_due(self.ctx.store)
            name, values = self.url_map.bind_to_environ(environ).match()
            route = ROUTES[name]
            response = self._serve(route, request, dict(values), request_id)
        except RequestRedirect as redirect:  # JSON, like every answer but the consent page
            response = ApiError(redirect.code, f"Moved to {redirect.new_url}",
                                headers={"Location": redirect.new_url}).to_response(request_id)
        except MethodNotAllowed as exc:
            response = ApiError(405, f"Method {request.method} not allowed on {request.path}",
                                headers={"Allow": ", ".join(exc.valid_methods or [])}).to_response(request_id)
        except NotFound:
            message = f"No such resource: {request.method} {request.path}"
            response = ApiError(404, message).to_response(request_id)
        except HTTPException as exc:
            response = ApiError(exc.code or 500, exc.description or "Error").to_response(request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        if route is None or route.logged:
            self.ctx.store.log_request({
                "method": request.method,
                "path": request.path,
                "endpoint": route.endpoint if route else None,
                "query": request.args.to_dict(flat=False),
                "body": body_for_log(request),  # headers (thus Authorization) are never recorded
                "status": response.status_code,
                "request_id": request_id,
            })
        delay = self.ctx.faults.delay_for(route.endpoint) if route and route.endpoint else 0.0
        if delay > 0:
            self.stopping.wait(delay)  # hold after commit; released early on shutdown
        return response(environ, start_response)

    def _serve(self, route: Route, request: Request, values: dict[str, Any], request_id: str) -> Response:
        before = self.ctx.faults.hold_before(route.endpoint) if route.endpoint else 0.0
        if before > 0:
            self.stopping.wait(before)  # hold before commit: the effect below happens regardless
        rule = self.ctx.faults.decide_failure(route.endpoint) if route.endpoint else None
        if rule is not None:  # injected failure: answer without performing the effect
            reason = HTTP_STATUS_CODES.get(rule.status, "Error")
            headers = {}
            if rule.status in (429, 503):
                seconds = rule.retry_after
                headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
            return ApiError(rule.status, f"{reason} (injected by the sandbox)",
                            headers=headers).to_response(request_id)
        try:
            response = route.handler(self.ctx, request, **values)
            patch = self.ctx.faults.patch_for(route.endpoint) if route.endpoint else None
            if patch is not None and 200 <= response.status_code < 300:
                # The effect happened (a token was rotated); only the answer drifts (sandbox.faults).
                response.set_data(patch_body(response.get_data(), patch))
            return response
        except ApiError as exc:
            return exc.to_response(request_id)
        except HTTPException:
            raise
        except Exception:  # a sandbox bug must still answer in the platform's error shape
            log.exception("sandbox handler %s failed", route.handler.__name__)
            return ApiError(500, "Internal sandbox error").to_response(request_id)

"""The platform's own background refresh of instance tokens, and operator switches for instances.

Cloud Elements refreshes OAuth tokens itself ("Cloud Elements automatically refreshes the token behind
the scenes", devportal ``_includes/Elements/index.md``), at ``oauth.user.refresh_time +
oauth.user.refresh_interval`` (elements-api.md §14a). The sandbox models it for instances holding an
OAuth2 refresh token: it rotates the token at the fake provider (so a later refresh with the old one gets
``invalid_grant``), writes the new ``oauth.user.refresh_token``/``oauth.user.token``/
``oauth.user.refresh_time`` into the instance, and marks the instance ``valid=false`` when its refresh is
rejected. Nothing runs on a timer: ``POST /_sandbox/platform-refresh`` runs the refreshes due at the
sandbox clock's "now", and ``start(auto_refresh=True)`` runs them before every request, so that tests
drive it deterministically with their clock.

``POST /_sandbox/instances/{id}/status`` sets an instance's ``valid``/``disabled`` (health checks).
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.provider import rotate
from sandbox.store import Instance, Store
from sandbox.web import ApiError, Context, json_response, read_json_object


def _due_at(instance: Instance) -> float | None:
    config = instance.configuration
    try:
        refreshed_ms = int(config.get("oauth.user.refresh_time") or "")
        interval_s = int(config.get("oauth.user.refresh_interval") or "")
    except ValueError:
        return None
    return refreshed_ms / 1000 + interval_s


def refresh_due(store: Store) -> list[dict[str, Any]]:
    """Refresh every valid, enabled instance whose OAuth2 refresh is due; one result per instance."""
    results: list[dict[str, Any]] = []
    with store.lock:
        now = store.now()
        for instance in sorted(store.instances.values(), key=lambda i: i.id):
            token = instance.configuration.get("oauth.user.refresh_token")
            due = _due_at(instance)
            if not token or due is None or due > now or not instance.valid or instance.disabled:
                continue
            outcome = rotate(store, token, "platform", None)
            if isinstance(outcome, str):
                instance.valid = False
                results.append({"id": instance.id, "refreshed": False, "error": outcome})
                continue
            instance.configuration.update({
                "oauth.user.refresh_token": outcome.token,
                "oauth.user.token": store.issue_bearer_token(outcome.token).token,
                "oauth.user.refresh_time": str(int(now * 1000)),
            })
            results.append({"id": instance.id, "refreshed": True})
    return results


def platform_refresh(ctx: Context, request: Request) -> Response:
    """``POST /_sandbox/platform-refresh``: run the platform's due refreshes now."""
    return json_response(refresh_due(ctx.store))


def instance_status(ctx: Context, request: Request, instance_id: str) -> Response:
    """``POST /_sandbox/instances/{id}/status`` with ``{"valid": bool, "disabled": bool}`` (either)."""
    body = read_json_object(request)
    flags = {name: body[name] for name in ("valid", "disabled") if name in body}
    if not flags or any(not isinstance(value, bool) for value in flags.values()):
        raise ApiError(400, "Give valid and/or disabled as JSON booleans")
    with ctx.store.lock:
        instance = ctx.store.instances.get(int(instance_id)) if instance_id.isdigit() else None
        if instance is None:
            raise ApiError(404, "Invalid Element Instance Id provided.")
        for name, value in flags.items():
            setattr(instance, name, value)
        return json_response({"id": instance.id, "valid": instance.valid, "disabled": instance.disabled})

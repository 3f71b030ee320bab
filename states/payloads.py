"""The exact query parameters and bodies the steps send (elements-api.md §1-§4d). Pure functions."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from states.attempt import Attempt
from states.elements import auth_type, spec_for
from states.model import Flow


def _config(attempt: Attempt) -> dict[str, Any]:
    spec = spec_for(attempt.element_key)
    cfg: dict[str, Any] = dict(spec.default_config.get(attempt.flow, {}))
    cfg.update(attempt.config)
    return cfg


def token_params(attempt: Attempt) -> dict[str, str]:
    """GET /elements/{key}/oauth/token query (OAuth1)."""
    c = attempt.config
    return {
        "apiKey": c["oauth.api.key"],
        "apiSecret": c["oauth.api.secret"],
        "callbackUrl": c["oauth.callback.url"],
    }


def oauth_url_params(attempt: Attempt, *, state: str, request_token: str | None) -> dict[str, str]:
    """GET /elements/{key}/oauth/url query for the attempt's flow."""
    params = token_params(attempt)
    if attempt.flow is Flow.OAUTH1:
        assert request_token is not None
        params["requestToken"] = request_token
    else:
        params.update(spec_for(attempt.element_key).oauth2_url_params)
        if "scope" in attempt.config:
            params["scope"] = str(attempt.config["scope"])
    params["state"] = state
    return params


def _tags(attempt: Attempt) -> list[str]:
    return [*attempt.tags, attempt.instance_tag]


def instance_body(attempt: Attempt) -> dict[str, Any]:
    """POST /instances body after the callback (seed guide §4a for OAuth1, §4b/§4c for OAuth2)."""
    cb: dict[str, Any] = attempt.secrets.get("callback", {})
    if attempt.flow is Flow.OAUTH1:
        provider = {
            "oauth_token": cb.get("oauth_token"),
            "realmId": cb.get("realmId"),
            "oauth_verifier": cb.get("oauth_verifier"),
            "secret": attempt.secrets.get("request_token_secret"),
            "state": cb.get("state"),
            "dataSource": cb.get("dataSource"),
        }
    else:
        provider = {"code": cb.get("code")}
        if cb.get("realmId"):
            provider["realmId"] = cb["realmId"]
    return {
        "element": {"key": attempt.element_key},
        "providerData": provider,
        "configuration": _config(attempt),
        "tags": _tags(attempt),
        "name": attempt.name,
    }


def quick_body(attempt: Attempt, now: datetime) -> dict[str, Any]:
    """POST /instances body of the quick (token) flow: OAuth1 tokens (§4d), OAuth2 refresh token (§4e)."""
    cfg = _config(attempt)
    interval = spec_for(attempt.element_key).quick_interval_s(auth_type(attempt.flow, cfg))
    if interval is not None:
        cfg.setdefault("oauth.user.refresh_interval", str(interval))
    cfg.setdefault("oauth.user.refresh_time", str(int(now.timestamp() * 1000)))
    return {
        "element": {"key": attempt.element_key},
        "configuration": cfg,
        "tags": _tags(attempt),
        "name": attempt.name,
        "externalAuthentication": "initial",
    }


def instance_configuration(instance: dict[str, Any]) -> dict[str, Any]:
    """An instance answer's ``configuration`` object; empty when it is missing or not an object."""
    config = instance.get("configuration")
    return config if isinstance(config, dict) else {}


def config_int(value: Any) -> int | None:
    """A configuration value as an integer (the platform sends numbers and numeric strings alike);
    None when it is missing, empty or not a number."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None

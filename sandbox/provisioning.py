"""Provisioning rules shared by create and re-authenticate: required configuration, the provider's
checks of ``providerData``, the development-key rule, and granting provider tokens to an instance."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sandbox.catalog import Element, find_element
from sandbox.defaults import MASK, OAUTH1_REFRESH_INTERVAL, OAUTH2_REFRESH_INTERVAL
from sandbox.store import AccessToken, Instance, Store
from sandbox.web import ApiError, provider_error

_OAUTH_REQUIRED = ("oauth.api.key", "oauth.api.secret", "oauth.callback.url")
_MASKED_KEYS = frozenset({"oauth.api.key", "oauth.api.secret", "password"})
_TAG_RE = re.compile(r"<[^>]*>")
INVALID_DATABASE = ("Error code : invalid_database. Error message : Development application can only "
                    "subscribe to sandbox company. Please use production keys or connect a sandbox company.")
#: What the platform relays when development keys are used without the sandbox flag (tips.md:35-41).
AUTHORIZATION_FAILED = "3100 - message=AuthorizationFailed; errorCode=003100; statusCode=403"
#: The QuickBooks element's sandbox-company switch, under its two documented names.
SANDBOX_FLAGS = ("use_sandbox", "connect.to.sandbox")
USER = {"id": 1, "emailAddress": "sandbox@example.com", "firstName": "Sandbox", "lastName": "User"}


def sanitize(text: Any) -> str:
    """Strip HTML tags, as the platform does for names and tags (``<a>x</a>`` -> ``x``)."""
    return _TAG_RE.sub("", str(text))


def normalize_config(config: Mapping[str, Any]) -> dict[str, str | None]:
    """Configuration values as the platform stores them: strings (booleans lower-case), or null."""
    out: dict[str, str | None] = {}
    for key, value in config.items():
        if value is None:
            out[str(key)] = None
        elif isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            # Object-valued entries (churros' ``extra.oauth.params``) are accepted and kept as JSON text.
            out[str(key)] = json.dumps(value, separators=(",", ":"))
        else:
            out[str(key)] = str(value)
    return out


def flow_of(element: Element, external_authentication: str, config: Mapping[str, Any]) -> tuple[str, str]:
    """``(flow, auth_type)``: flow is oauth1 | oauth2 | quick, auth_type is oauth1 | oauth2."""
    auth_type = element.flow_for(config)
    return ("quick" if external_authentication == "initial" else auth_type), auth_type


def required_entries(element: Element, flow: str, auth_type: str) -> tuple[str, ...]:
    """The configuration keys a create request must carry for this flow."""
    if flow != "quick":
        return _OAUTH_REQUIRED
    if auth_type == "oauth1":
        names: tuple[str, ...] = ("oauth.api.key", "oauth.api.secret", "oauth.user.token",
                                  "oauth.user.token.secret")
    else:  # external authentication from an existing refresh token (elements-api.md §4e)
        names = ("oauth.api.key", "oauth.api.secret", "oauth.user.refresh_token")
    return names + (("quickbooks.realm.id",) if element.has_realm else ())


def check_required(config: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """400 naming every missing entry (sorted) — the first check after auth and element."""
    absent = sorted(name for name in names if config.get(name) in (None, ""))
    if absent:
        raise ApiError(400, f"Missing required configuration entries: {', '.join(absent)}")


def consume_oauth1(store: Store, provider_data: Mapping[str, Any], api_key: str) -> str:
    """Check an OAuth1 exchange as Intuit would, consume the verifier, and return the realm id."""
    with store.lock:
        token = store.request_tokens.get(str(provider_data.get("oauth_token") or ""))
        if token is None or token.consumed:
            raise provider_error("oauth_problem=token_rejected (unknown or already used oauth_token)")
        if token.verifier is None:
            raise provider_error("oauth_problem=permission_unknown (the user has not approved this token)")
        if token.api_key != api_key:
            raise provider_error("oauth_problem=consumer_key_rejected (oauth.api.key does not match the "
                                 "key the request token was issued to)")
        if str(provider_data.get("oauth_verifier") or "") != token.verifier:
            raise provider_error("oauth_problem=verifier_invalid")
        if str(provider_data.get("secret") or "") != token.secret:
            raise provider_error("oauth_problem=signature_invalid (secret is not the request token secret)")
        if str(provider_data.get("realmId") or "") != token.realm_id:
            raise provider_error("realmId does not match the company the user authorized")
        token.consumed = True
        assert token.realm_id is not None
        return token.realm_id


def consume_oauth2(store: Store, provider_data: Mapping[str, Any], api_key: str) -> str | None:
    """Check and consume a single-use OAuth2 code; return the consented realm id (None if not Intuit)."""
    with store.lock:
        code = store.codes.get(str(provider_data.get("code") or ""))
        if code is None or code.used:
            raise provider_error("invalid_grant: the authorization code is unknown or was already used")
        if code.client_id != api_key:
            raise provider_error("invalid_grant: the authorization code was issued to another client")
        realm = provider_data.get("realmId")
        if realm not in (None, "") and code.realm_id is not None and str(realm) != code.realm_id:
            raise provider_error("realmId does not match the company the user authorized")
        code.used = True
        element = find_element(code.element_key or "")
        return code.realm_id if element is not None and element.has_realm else None


def is_development_key(api_key: str) -> bool:
    """The sandbox's convention: production keys start with ``prod``; every other key is a development key.

    Real Intuit keys do not show their kind; what matters is the rule the platform applies to them.
    """
    return not api_key.startswith("prod")


def sandbox_company_flag(config: Mapping[str, Any]) -> bool:
    """Whether the configuration asks for a sandbox company (``use_sandbox`` or ``connect.to.sandbox``)."""
    return any(str(config.get(flag) or "").lower() == "true" for flag in SANDBOX_FLAGS)


def check_company(store: Store, element: Element, config: Mapping[str, Any], realm_id: str | None) -> None:
    """Intuit's rules for QuickBooks: development keys only reach sandbox companies, and only when the
    instance says so (``use_sandbox=true``, later docs ``connect.to.sandbox``); without the flag the
    platform talks to the production API, which answers 3100 (devportal ``quickbooksonline/tips.md``)."""
    if not element.has_realm:
        return
    api_key = str(config.get("oauth.api.key") or "")
    with store.lock:
        company = store.realms.get(realm_id or "")
    if not is_development_key(api_key):
        return
    if company == "production":
        raise provider_error(INVALID_DATABASE)
    if not sandbox_company_flag(config):
        raise provider_error(AUTHORIZATION_FAILED)


def now_ms(store: Store) -> str:
    """``oauth.user.refresh_time`` value for "now" (epoch milliseconds, as a string)."""
    return str(int(store.now() * 1000))


def grant(store: Store, instance: Instance, auth_type: str, realm_id: str | None) -> None:
    """Put fresh provider tokens into an instance after a consented OAuth exchange."""
    config = instance.configuration
    api_key, api_secret = config.get("oauth.api.key") or "", config.get("oauth.api.secret") or ""
    store.invalidate_instance_tokens(instance.id)
    if auth_type == "oauth1":
        access = store.issue_access_token(api_key, api_secret, instance.id)
        config["oauth.user.token"], config["oauth.user.token.secret"] = access.token, access.secret
        config.setdefault("oauth.user.refresh_interval", OAUTH1_REFRESH_INTERVAL)
        config.pop("oauth.user.refresh_token", None)
    else:
        refresh = store.issue_refresh_token(api_key, api_secret, instance.id)
        config["oauth.user.token"] = store.issue_bearer_token(refresh.token).token
        config["oauth.user.refresh_token"] = refresh.token
        config.setdefault("oauth.user.refresh_interval", OAUTH2_REFRESH_INTERVAL)
    config["oauth.user.refresh_time"] = now_ms(store)
    if realm_id is not None:
        config["quickbooks.realm.id"] = realm_id
        instance.realm_id = realm_id
    instance.valid = True


def adopt_external_tokens(store: Store, instance: Instance, auth_type: str) -> None:
    """Quick provision: remember the caller's tokens so the provider endpoints know them."""
    config = instance.configuration
    api_key, api_secret = config.get("oauth.api.key") or "", config.get("oauth.api.secret") or ""
    if config.get("oauth.user.refresh_time") in (None, ""):
        config["oauth.user.refresh_time"] = now_ms(store)
    with store.lock:
        if auth_type == "oauth1":
            config.setdefault("oauth.user.refresh_interval", OAUTH1_REFRESH_INTERVAL)
            token = config.get("oauth.user.token") or ""
            try:  # The token's life runs from when it was obtained, if the caller says so.
                granted = int(config.get("oauth.user.refresh_time") or "") / 1000
            except ValueError:
                granted = store.now()
            existing = store.access_tokens.get(token)
            if existing is None:
                store.access_tokens[token] = AccessToken(
                    token, config.get("oauth.user.token.secret") or "", api_key, granted, instance.id,
                    consumer_secret=api_secret)
            else:
                existing.instance_id = instance.id
        else:
            config.setdefault("oauth.user.refresh_interval", OAUTH2_REFRESH_INTERVAL)
            token = config.get("oauth.user.refresh_token") or ""
            known = store.refresh_tokens.get(token)
            if known is None:
                store.issue_refresh_token(api_key, api_secret, instance.id, token=token)
            else:
                known.instance_id = instance.id
    instance.realm_id = config.get("quickbooks.realm.id")


def new_instance_token() -> str:
    """A 44-char base64 instance token (32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def instance_json(instance: Instance) -> dict[str, Any]:
    """The instance object of elements-api.md §11.1, with api key/secret masked."""
    element = find_element(instance.element_key)
    assert element is not None
    config = {key: (MASK if key in _MASKED_KEYS and value is not None else value)
              for key, value in instance.configuration.items()}
    created = datetime.fromtimestamp(instance.created_at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": instance.id,
        "name": instance.name,
        "createdDate": created,
        "token": instance.token,
        "element": element.to_json(element.flow_for(instance.configuration)),
        "elementId": element.id,
        "tags": list(instance.tags),
        "provisionInteractions": [],
        "valid": instance.valid,
        "disabled": instance.disabled,
        "maxCacheSize": 0,
        "cacheTimeToLive": 0,
        "cachingEnabled": False,
        "configuration": config,
        "eventsEnabled": instance.configuration.get("event.notification.enabled") == "true",
        "traceLoggingEnabled": False,
        "externalAuthentication": instance.external_authentication,
        "user": dict(USER),
    }

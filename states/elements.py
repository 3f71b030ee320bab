"""What the engine knows about elements: flows, required configuration, token lifetimes.

Unknown element keys are allowed (the platform has hundreds) and treated as generic OAuth2
elements; the platform answers 404 when a key really does not exist.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from states.model import Flow

QBO_OAUTH1_INTERVAL_S = 13_046_400  # 151 days: Intuit's advice for the 180-day OAuth1 token
OAUTH2_INTERVAL_S = 3_600  # access tokens live one hour

_OAUTH_REQUIRED = ("oauth.api.key", "oauth.api.secret", "oauth.callback.url")


@dataclass(frozen=True)
class ElementSpec:
    """Per-element facts the steps need."""

    key: str
    flows: tuple[Flow, ...]
    default_flow: Flow
    # Extra query parameters for GET /oauth/url in the OAuth2 flow (elements-api.md §2).
    oauth2_url_params: dict[str, str] = field(default_factory=dict)
    # Configuration entries added to POST /instances unless the caller set them (seed guide §4a).
    default_config: dict[Flow, dict[str, Any]] = field(default_factory=dict)
    refresh_interval_s: dict[Flow, int] = field(default_factory=dict)
    # Callback parameters this element's provider always sends, beyond the flow's own
    # (``states.judge.REQUIRED``): a callback without them is rejected, not applied.
    callback_params: dict[Flow, tuple[str, ...]] = field(default_factory=dict)

    def required_config(self, flow: Flow, auth: str = "oauth1") -> tuple[str, ...]:
        """Configuration keys that must be present before any HTTP call.

        ``auth`` is the authentication type (``auth_type``): a quick OAuth1 start brings the token
        and its secret (elements-api.md §4d), a quick OAuth2 start its refresh token (§4e).
        """
        if flow is Flow.QUICK:
            extra = ("quickbooks.realm.id",) if self.key == "quickbooks" else ()
            user = ("oauth.user.refresh_token",) if auth == "oauth2" else (
                "oauth.user.token", "oauth.user.token.secret")
            return ("oauth.api.key", "oauth.api.secret", *user, *extra)
        return _OAUTH_REQUIRED

    def quick_interval_s(self, auth: str) -> int | None:
        """The ``oauth.user.refresh_interval`` a quick start sends when the caller set none."""
        return OAUTH2_INTERVAL_S if auth == "oauth2" else self.refresh_interval_s.get(Flow.QUICK)


AUTH_TYPES = ("oauth1", "oauth2")


def auth_type(flow: Flow, config: Mapping[str, Any]) -> str:
    """``oauth1`` or ``oauth2``: the instance's ``authentication.type``, else what the flow implies.

    Quick starts are OAuth1 (§4d) unless ``authentication.type=oauth2`` says they bring an OAuth2
    refresh token (§4e); the flow alone never decides for them.
    """
    explicit = str(config.get("authentication.type") or "").lower()
    if explicit in AUTH_TYPES:
        return explicit
    return "oauth2" if flow is Flow.OAUTH2 else "oauth1"


ELEMENTS: dict[str, ElementSpec] = {
    "quickbooks": ElementSpec(
        key="quickbooks",
        flows=(Flow.OAUTH1, Flow.OAUTH2, Flow.QUICK),
        default_flow=Flow.OAUTH1,
        oauth2_url_params={"scope": "com.intuit.quickbooks.accounting", "authentication.type": "oauth2"},
        default_config={
            Flow.OAUTH1: {"filter.response.nulls": True},
            Flow.OAUTH2: {"authentication.type": "oauth2"},
            Flow.QUICK: {"quickbooks.datasource": "QBO"},
        },
        refresh_interval_s={
            Flow.OAUTH1: QBO_OAUTH1_INTERVAL_S,
            Flow.QUICK: QBO_OAUTH1_INTERVAL_S,
            Flow.OAUTH2: OAUTH2_INTERVAL_S,
        },
        # Intuit's OAuth2 redirect carries code, state and realmId (elements-api.md §3): the
        # realmId names the company, which the realm guard and the instance need.
        callback_params={Flow.OAUTH2: ("realmId",)},
    ),
    "sfdc": ElementSpec(
        "sfdc", (Flow.OAUTH2,), Flow.OAUTH2, refresh_interval_s={Flow.OAUTH2: OAUTH2_INTERVAL_S}
    ),
    "hubspot": ElementSpec(
        "hubspot", (Flow.OAUTH2,), Flow.OAUTH2, refresh_interval_s={Flow.OAUTH2: OAUTH2_INTERVAL_S}
    ),
}


def spec_for(key: str) -> ElementSpec:
    """The catalogue entry for ``key``, or a generic OAuth2 spec for elements we do not know."""
    return ELEMENTS.get(key) or ElementSpec(
        key, (Flow.OAUTH2, Flow.OAUTH1), Flow.OAUTH2, refresh_interval_s={Flow.OAUTH2: OAUTH2_INTERVAL_S}
    )

"""What the engine knows about elements: flows, required configuration, token lifetimes.

Unknown element keys are allowed (the platform has hundreds) and treated as generic OAuth2
elements; the platform answers 404 when a key really does not exist.
"""
from __future__ import annotations

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

    def required_config(self, flow: Flow) -> tuple[str, ...]:
        """Configuration keys that must be present before any HTTP call."""
        if flow is Flow.QUICK:
            extra = ("quickbooks.realm.id",) if self.key == "quickbooks" else ()
            return (
                "oauth.api.key",
                "oauth.api.secret",
                "oauth.user.token",
                "oauth.user.token.secret",
                *extra,
            )
        return _OAUTH_REQUIRED


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

"""Judging a platform instance's health (issue 10/12 must-have 5): a pure function of its answer.

``Engine.check`` (``engine.core.health``) asks GET ``/instances/{id}`` and hands the answer here;
the watcher of platform-owned renewals can call the same judge on the answers it already fetches,
so both agree on what "unhealthy" means. Cloud Elements marks an instance whose provider tokens
stopped working ``valid: false`` and one an administrator switched off ``disabled: true``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from states.attempt import Attempt
from states.renewal import renewal_mode

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

#: Reasons, most serious first (the first that applies is reported).
INSTANCE_MISSING = "instance_missing"  # 404: deleted on the platform
INSTANCE_DISABLED = "instance_disabled"
INSTANCE_INVALID = "instance_invalid"  # the platform can no longer use the provider tokens
PROVIDER_REJECTED = "provider_rejected"  # the provider (Intuit) refused the engine's own token (401)

#: Element configuration switches that mean "a sandbox company" (devportal quickbooksonline/tips.md).
_SANDBOX_FLAGS = ("use_sandbox", "connect.to.sandbox")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one health check: ``health`` is ``healthy`` or ``unhealthy`` (with ``reason``)."""

    health: str
    reason: str | None = None

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return self.health == HEALTHY


OK = Verdict(HEALTHY)


def judge_instance(instance: Mapping[str, Any] | None) -> Verdict:
    """The verdict on GET ``/instances/{id}``'s answer; ``None`` means the platform answered 404.

    A missing ``valid`` or ``disabled`` field counts as fine: only what the platform says is wrong
    makes an instance unhealthy (the field appears in every answer the devportal documents).
    """
    if instance is None:
        return Verdict(UNHEALTHY, INSTANCE_MISSING)
    if instance.get("disabled") is True:
        return Verdict(UNHEALTHY, INSTANCE_DISABLED)
    if instance.get("valid") is False:
        return Verdict(UNHEALTHY, INSTANCE_INVALID)
    return OK


def needs_event(previous_health: str | None, verdict: Verdict, previous_reason: str | None = None) -> bool:
    """Whether this verdict is news: ``connection.unhealthy`` fires when an instance *becomes*
    unhealthy (or unhealthy for another reason), not on every check that finds it still broken."""
    if verdict.healthy:
        return False
    return previous_health != UNHEALTHY or previous_reason != verdict.reason


@dataclass(frozen=True)
class ProviderCheck:
    """What to ask the provider about an engine-owned connection: the realm and the user's token
    (an OAuth2 access token, or the OAuth1 key, secret, token and token secret). Never logged."""

    realm_id: str
    sandbox_company: bool
    access_token: str | None = None
    oauth1: tuple[str, str, str, str] | None = None

    def __repr__(self) -> str:
        kind = "oauth1" if self.oauth1 else "oauth2"
        return f"ProviderCheck(realm_id={self.realm_id!r}, {kind}, <tokens redacted>)"


def provider_check(attempt: Attempt) -> ProviderCheck | None:
    """The provider-side check of ``attempt``, or None when there is none to make.

    Only where the engine owns the tokens (``states.renewal.renewal_mode``): platform-owned tokens
    live on the platform, whose ``valid`` flag already says whether the provider takes them. The
    check reads the QuickBooks company, so it needs the realm. An OAuth2 connection is checked with
    its access token; before the engine's first refresh it holds none (the caller brought only a
    refresh token), and presenting the refresh token would rotate it, so nothing is asked then.
    """
    mode = renewal_mode(attempt)
    config = attempt.config
    realm = attempt.realm_id or config.get("quickbooks.realm.id")
    if mode == "platform" or not realm:
        return None
    tokens: dict[str, Any] = attempt.secrets.get("user_tokens") or {}
    sandbox = any(str(config.get(flag, "")).lower() == "true" for flag in _SANDBOX_FLAGS)
    if mode == "oauth2":
        access = tokens.get("oauth.user.token")
        return ProviderCheck(str(realm), sandbox, access_token=str(access)) if access else None
    return ProviderCheck(str(realm), sandbox, oauth1=(
        str(config.get("oauth.api.key", "")), str(config.get("oauth.api.secret", "")),
        str(tokens["oauth.user.token"]), str(tokens["oauth.user.token.secret"])))

"""The PROVISIONED step: keep the instance's tokens fresh (DESIGN §7, elements-api.md §13).

Three modes, picked from the attempt's renewal owner and the instance's authentication type:
- ``oauth2``: engine-owned, OAuth2, we hold the refresh token: refresh-token grant at the provider
  (the token rotates); a platform refresh made while we were late is adopted (``states.ownership``).
- ``oauth1``: engine-owned, OAuth1 token/secret (QuickBooks): Reconnect, only in the last 30 days of
  the 180-day token (Intuit error 212 outside it, 270 once expired).
- ``platform``: the platform refreshes by itself; we only watch the instance (``states.ownership``).

A renewal commits PROVISIONED --renew--> PROVISIONED with the new tokens in the same transaction;
pushing them to the instance (PATCH /instances/{id}) is the next run of this step, so a failed push
is retried without ever losing the rotated token.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from states.attempt import Attempt
from states.decisions import Advance, Decision, Fail, Stay
from states.elements import auth_type, spec_for
from states.model import FailureReason, RenewalOwner, Trigger
from states.ownership import REAUTHORIZE_HINT as REAUTHORIZE_HINT
from states.ownership import adopt_platform_refresh, watch_instance
from states.ports import Ports
from states.schedule import next_renewal_at

OAUTH1_TOKEN_LIFETIME = timedelta(days=180)
OAUTH1_RECONNECT_WINDOW = timedelta(days=30)


def renewal_mode(attempt: Attempt) -> str:
    """``oauth2``, ``oauth1`` or ``platform`` (see the module docstring).

    The authentication type comes from the instance's configuration (``authentication.type``),
    never from the flow alone: a quick start may bring OAuth1 or OAuth2 tokens.
    """
    if attempt.owner is RenewalOwner.PLATFORM:
        return "platform"
    tokens: dict[str, Any] = attempt.secrets.get("user_tokens") or {}
    config = {**spec_for(attempt.element_key).default_config.get(attempt.flow, {}), **attempt.config}
    auth = auth_type(attempt.flow, config)
    if auth == "oauth2" and tokens.get("oauth.user.refresh_token"):
        return "oauth2"
    if auth == "oauth1" and tokens.get("oauth.user.token") and tokens.get("oauth.user.token.secret"):
        return "oauth1"
    return "platform"


def renewed(attempt: Attempt, ports: Ports, tokens: dict[str, Any], note: str) -> Advance:
    """The renew transition that stores ``tokens`` (the instance's user tokens after a rotation).

    The engine's runner builds the same transition when a step fails after the provider rotated
    (issue 16 item 1), so that the new token is stored whatever failed.
    """
    now = ports.now()
    now_ms = int(now.timestamp() * 1000)
    interval = attempt.refresh_interval_s or 3600
    return Advance(
        Trigger.RENEW,
        changes={"refresh_time": now_ms,
                 "next_renewal_at": next_renewal_at(now_ms, interval, ports.settings.renewal_max_lead_s),
                 "renewals": attempt.renewals + 1},
        secrets={"user_tokens": tokens, "push_pending": True},
        next_run_at=now,  # push the new tokens to the instance right away
        note=note,
    )


def handle_provisioned(attempt: Attempt, ports: Ports) -> Decision:
    """Renew, push renewed tokens to the instance, or check a platform-managed instance."""
    secrets = attempt.secrets
    tokens: dict[str, Any] = dict(secrets.get("user_tokens") or {})
    config = attempt.config
    instance_id = attempt.instance_id or ""
    if secrets.get("push_pending"):
        body = {"configuration": {**tokens, "oauth.user.refresh_time": str(attempt.refresh_time)}}
        ports.call(lambda _n: ports.client.update_instance(instance_id, body))
        return Stay(secrets={"push_pending": False}, next_run_at=attempt.next_renewal_at)
    mode = renewal_mode(attempt)
    if mode == "oauth2":
        if (adopted := adopt_platform_refresh(attempt, ports, tokens)) is not None:
            return adopted
        fresh = ports.call(lambda _n: ports.client.refresh_oauth2(
            config["oauth.api.key"], config["oauth.api.secret"], tokens["oauth.user.refresh_token"]))
        # ``rotated()``: the new refresh token, and the access token when the answer had a usable one.
        tokens.update(fresh.rotated())
        return renewed(attempt, ports, tokens, "refresh-token grant")
    if mode == "oauth1":
        result = ports.call(lambda _n: ports.client.reconnect_oauth1(
            config["oauth.api.key"], config["oauth.api.secret"],
            tokens["oauth.user.token"], tokens["oauth.user.token.secret"]))
        if result.code == 0:
            tokens.update(result.rotated())
            return renewed(attempt, ports, tokens, "OAuth1 Reconnect")
        if result.code == 212 and attempt.refresh_time:
            # Outside the 30-day window: wait for it instead of failing (our clock or the grant time
            # may differ a little from Intuit's).
            granted = datetime.fromtimestamp(attempt.refresh_time / 1000, tz=timezone.utc)
            opens = granted + OAUTH1_TOKEN_LIFETIME - OAUTH1_RECONNECT_WINDOW + timedelta(hours=1)
            if opens > ports.now():
                return Stay(next_run_at=opens)
        return Fail(FailureReason.RENEWAL_REJECTED, {
            "kind": "renewal_rejected", "message": f"Reconnect error {result.code}: {result.message}",
            "hint": "Intuit says we are outside the Reconnect window although our records say otherwise; "
                    + REAUTHORIZE_HINT})
    return watch_instance(attempt, ports)

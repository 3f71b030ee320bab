"""One owner per token (DESIGN §7): watching a platform-owned instance, adopting a platform refresh.

Cloud Elements refreshes OAuth tokens itself at ``oauth.user.refresh_time + oauth.user.refresh_interval``.
With rotating refresh tokens (QuickBooks OAuth2) two parties refreshing the same token lose it: the
second presents a dead token and gets ``invalid_grant``. So each PROVISIONED attempt has ONE owner:

- ``platform``: the engine never refreshes; it *watches* GET ``/instances/{id}``. ``valid=false``,
  ``disabled=true``, or an ``oauth.user.refresh_time`` that did not advance past its due time plus a
  grace, means the platform failed: the attempt fails as ``renewal_rejected`` (the events mapping
  turns that into ``connection.reauthorization_required``).
- ``engine``: the engine renews ahead of the platform's schedule (``states.renewal``) and pushes the
  new ``oauth.user.refresh_time``, which moves the platform's schedule forward. If the engine was down
  past the platform's due time, the platform may have refreshed meanwhile: before presenting its own
  (maybe dead) refresh token, the engine reads the instance back and adopts newer tokens.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from states.attempt import Attempt
from states.decisions import Advance, Decision, Fail, Stay
from states.model import FailureReason, Trigger
from states.payloads import config_int, instance_configuration
from states.ports import Ports
from states.schedule import next_renewal_at

REAUTHORIZE_HINT = "The user must approve again: run `provision reauthorize ID` (same instance, new consent)."
DEFAULT_INTERVAL_S = 3600


def watch_grace_s(interval_s: int) -> int:
    """How long past its due time the platform may take to refresh: 10% of the interval, 5 min to 1 h."""
    return max(300, min(interval_s // 10, 3600))


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _unusable(attempt: Attempt, instance: dict[str, Any]) -> Fail | None:
    """The re-authorisation need when the platform marked the instance invalid or disabled."""
    if instance.get("valid") is False:
        message = f"instance {attempt.instance_id} is no longer valid"
    elif instance.get("disabled") is True:
        message = f"instance {attempt.instance_id} is disabled"
    else:
        return None
    return Fail(FailureReason.RENEWAL_REJECTED,
                {"kind": "renewal_rejected", "message": message, "hint": REAUTHORIZE_HINT})


def watch_instance(attempt: Attempt, ports: Ports) -> Decision:
    """Platform-owned: check that the platform keeps the instance valid and refreshed; never refresh."""
    instance_id = attempt.instance_id or ""
    instance = ports.call(lambda _n: ports.client.get_instance(instance_id))
    if (failed := _unusable(attempt, instance)) is not None:
        return failed
    config = instance_configuration(instance)
    interval = (config_int(config.get("oauth.user.refresh_interval")) or attempt.refresh_interval_s
                or DEFAULT_INTERVAL_S)
    observed = config_int(config.get("oauth.user.refresh_time"))
    now = ports.now()
    if observed is None:  # nothing to judge the platform's schedule by: look again an interval later
        return Stay(next_run_at=now + timedelta(seconds=interval))
    due = _at(observed) + timedelta(seconds=interval)
    deadline = due + timedelta(seconds=watch_grace_s(interval))
    if now >= deadline:  # at the deadline itself: a Stay due now would run again at once
        return Fail(FailureReason.RENEWAL_REJECTED, {
            "kind": "renewal_rejected",
            "message": f"the platform did not refresh instance {instance_id}: due at {due.isoformat()}, "
                       f"oauth.user.refresh_time still {observed}",
            "hint": REAUTHORIZE_HINT})
    return Stay(changes={"refresh_time": observed, "next_renewal_at": due}, next_run_at=deadline)


def adopt_platform_refresh(attempt: Attempt, ports: Ports, tokens: dict[str, Any]) -> Decision | None:
    """Engine-owned OAuth2, run late: the platform's newer tokens as a renewal, or None to refresh.

    Only when the platform's own due time (``refresh_time + interval``) has passed can it have
    refreshed, so only then is the instance read back; on time, the engine's lead keeps it first.
    """
    interval = attempt.refresh_interval_s or DEFAULT_INTERVAL_S
    if attempt.refresh_time is None or ports.now() < _at(attempt.refresh_time) + timedelta(seconds=interval):
        return None
    instance_id = attempt.instance_id or ""
    instance = ports.call(lambda _n: ports.client.get_instance(instance_id))
    if (failed := _unusable(attempt, instance)) is not None:
        return failed
    config = instance_configuration(instance)
    observed = config_int(config.get("oauth.user.refresh_time"))
    refresh_token = config.get("oauth.user.refresh_token")
    if (observed is None or observed <= attempt.refresh_time or not refresh_token
            or refresh_token == tokens.get("oauth.user.refresh_token")):
        return None
    adopted = {**tokens, **{k: v for k, v in config.items()
                            if k.startswith("oauth.user.") and "token" in k and isinstance(v, str) and v}}
    due = next_renewal_at(observed, interval, ports.settings.renewal_max_lead_s)
    return Advance(
        Trigger.RENEW,
        changes={"refresh_time": observed, "next_renewal_at": due, "renewals": attempt.renewals + 1},
        secrets={"user_tokens": adopted, "push_pending": False},  # the instance has them already
        next_run_at=due,
        note="adopted the platform's refresh",
    )

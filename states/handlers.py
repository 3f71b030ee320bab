"""One handler per state: the step that leaves it (DESIGN §2). No database, no sleeping.

A handler returns a decision; exceptions it lets through (``ProvisionError`` from the client,
after in-process retries) are classified by the engine into RetryLater or Fail.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from states import exactly_once, reauth
from states.attempt import Attempt
from states.decisions import Advance, Decision, Fail, WaitForCallback
from states.disconnect import handle_disconnecting
from states.elements import spec_for
from states.model import FailureReason, Flow, State, Trigger
from states.payloads import (
    config_int,
    instance_body,
    instance_configuration,
    oauth_url_params,
    quick_body,
    token_params,
)
from states.ports import Ports
from states.realm import quick_refusal, realm_of
from states.realm import refused as realm_refused
from states.renewal import handle_provisioned
from states.schedule import is_past, next_renewal_at

Handler = Callable[[Attempt, Ports], Decision]


def handle_new(attempt: Attempt, ports: Ports) -> Decision:
    """NEW: quick flow creates the instance; OAuth1 gets a request token; OAuth2 redirects."""
    if attempt.flow is Flow.QUICK:
        if (refusal := quick_refusal(attempt, ports)) is not None:  # its realm, claimed at start
            return refusal
        return _provision(attempt, ports, Trigger.QUICK_PROVISION, quick_body(attempt, ports.now()))
    if attempt.flow is Flow.OAUTH1:
        p = token_params(attempt)
        rt = ports.call(
            lambda _n: ports.client.request_token(
                attempt.element_key,
                api_key=p["apiKey"],
                api_secret=p["apiSecret"],
                callback_url=p["callbackUrl"],
            )
        )
        return Advance(
            Trigger.ISSUE_TOKEN,
            changes={"request_token_hash": ports.digest(rt.token)},
            secrets={"request_token": rt.token, "request_token_secret": rt.secret},
            next_run_at=ports.now(),
        )
    return _redirect(attempt, ports, request_token=None)


def handle_token_issued(attempt: Attempt, ports: Ports) -> Decision:
    """TOKEN_ISSUED: ask for the consent URL carrying the request token and a fresh state."""
    return _redirect(attempt, ports, request_token=attempt.secrets.get("request_token"))


def _redirect(attempt: Attempt, ports: Ports, request_token: str | None) -> Decision:
    # The attempt id in the state lets an early callback (before this commit) find its attempt;
    # the random part is what proves it genuine, and only its hash is stored.
    state = f"{attempt.id}.{ports.new_nonce()}"
    params = oauth_url_params(attempt, state=state, request_token=request_token)
    url = ports.call(lambda _n: ports.client.oauth_url(attempt.element_key, params))
    wait = attempt.callback_wait_s or ports.settings.callback_wait_s
    deadline = ports.now() + timedelta(seconds=wait)
    return Advance(
        Trigger.REDIRECT,
        changes={"state_nonce_hash": ports.digest(state), "deadline_at": deadline},
        secrets={"redirect_url": url},
        next_run_at=deadline,  # wake up to expire the attempt if the user never comes back
    )


def handle_redirected(attempt: Attempt, ports: Ports) -> Decision:
    """REDIRECTED: nothing to call; fail once the callback deadline has passed."""
    if is_past(attempt.deadline_at, ports.now()):
        return Fail(
            FailureReason.CALLBACK_TIMEOUT,
            {"kind": "callback_timeout", "message": "no callback before the deadline",
             "hint": "Start a new attempt (or `provision restart ID`) and ask the user to consent in time."},
        )
    assert attempt.deadline_at is not None
    return WaitForCallback(attempt.deadline_at)


def handle_callback_received(attempt: Attempt, ports: Ports) -> Decision:
    """CALLBACK_RECEIVED: create the instance (or adopt the one a crashed try created).

    First, a callback that names a realm (QuickBooks company) claims it: a realm already connected
    by another live attempt fails this one before any instance is created (``states.realm``).
    """
    realm_id = realm_of(attempt)
    if realm_id is None:
        return _provision(attempt, ports, Trigger.PROVISION, instance_body(attempt))
    holder = ports.claim_realm(attempt, realm_id)
    if holder is not None:
        return realm_refused(attempt, realm_id, holder)
    decision = _provision(attempt, ports, Trigger.PROVISION, instance_body(attempt))
    if isinstance(decision, Advance):
        return replace(decision, changes={**decision.changes, "realm_id": realm_id})
    return decision


def _provision(attempt: Attempt, ports: Ports, trigger: Trigger, body: dict[str, Any]) -> Decision:
    if attempt.instance_id:
        # A restarted (re-authorised) attempt keeps its instance: new consent, same instance.
        # The code is single use, so the PUT is made crash-safe by states/reauth.py.
        if (mark := reauth.before_put(attempt, ports)) is not None:
            return mark
        instance, adopted = reauth.reauthenticate(attempt, ports, body)
        decision = _provisioned(attempt, ports, trigger, body, instance, adopted=False)
        note = f"adopted instance {attempt.instance_id}, re-authenticated by an earlier try"
        return replace(decision, secrets={**decision.secrets, **reauth.done()},
                       note=note if adopted else decision.note)
    if (wait := exactly_once.settling(attempt, ports)) is not None:
        return wait
    created = ports.call(lambda n: _create_or_adopt(attempt, ports, body, n))
    if isinstance(created, _Unanswered):
        return exactly_once.ambiguous(attempt, ports, created.sent_at, created.kind)
    instance, adopted, repeat = created
    decision = _provisioned(attempt, ports, trigger, body, instance, adopted=adopted)
    # A second POST was possible when this step ran before, tried again, or followed an ambiguous one.
    return exactly_once.after_create(attempt, ports, decision, maybe_twice=repeat)


@dataclass(frozen=True)
class _Unanswered:
    """A POST /instances that may have reached the platform, with no answer (``kind``)."""

    sent_at: datetime
    kind: str


def _create_or_adopt(attempt: Attempt, ports: Ports, body: dict[str, Any],
                     try_number: int) -> tuple[dict[str, Any], bool, bool] | _Unanswered:
    """(instance, adopted, repeat): the instance created or found by tag; ``repeat`` says this
    step may have POSTed before. ``_Unanswered`` when the POST got no answer."""
    def adopt() -> dict[str, Any] | None:
        found = ports.client.find_instances_by_tag(attempt.instance_tag)
        return min(found, key=lambda i: str(i.get("id"))) if found else None

    # POST /instances is not idempotent. If this step may have run before (a crash after the
    # platform created the instance, an ambiguous POST that settled), look the tag up first.
    repeat = try_number > 1 or attempt.runs > 1 or exactly_once.CREATE_SENT_AT in attempt.secrets
    if repeat and (found := adopt()) is not None:
        return found, True, repeat
    sent_at = ports.now()
    try:
        return ports.client.create_instance(body), False, repeat
    except Exception as exc:
        kind = getattr(exc, "kind", None)
        if kind in exactly_once.AMBIGUOUS_KINDS:
            # Not retried in process: the platform may commit this POST after we gave up, so no
            # second POST before a look-up a settle time later (DESIGN §4).
            return _Unanswered(sent_at, str(kind))
        # On a repeat, "verifier/code already used" means an earlier try of this very step
        # (whose lease we took over) consumed it and created the instance: adopt that one.
        if repeat and kind == "provider_rejected" and (found := adopt()) is not None:
            return found, True, repeat
        raise


def _provisioned(attempt: Attempt, ports: Ports, trigger: Trigger, body: dict[str, Any],
                 instance: dict[str, Any], *, adopted: bool) -> Advance:
    config = instance_configuration(instance)
    interval = config_int(config.get("oauth.user.refresh_interval")) or config_int(
        body.get("configuration", {}).get("oauth.user.refresh_interval")
    ) or spec_for(attempt.element_key).refresh_interval_s.get(attempt.flow)
    now_ms = int(ports.now().timestamp() * 1000)
    refresh_time = config_int(config.get("oauth.user.refresh_time")) or config_int(
        body.get("configuration", {}).get("oauth.user.refresh_time")
    ) or now_ms
    changes: dict[str, Any] = {"instance_id": str(instance["id"]), "refresh_time": refresh_time}
    if interval:
        changes["refresh_interval_s"] = interval
        changes["next_renewal_at"] = next_renewal_at(
            refresh_time, interval, ports.settings.renewal_max_lead_s
        )
    tokens = {k: v for k, v in config.items() if k.startswith("oauth.user.") and "token" in k and v}
    note = f"adopted instance {instance['id']} found by tag" if adopted else None
    if attempt.instance_id:
        note = f"re-authenticated instance {attempt.instance_id}"
    return Advance(
        trigger,
        changes=changes,
        secrets={"instance_token": instance.get("token") or attempt.secrets.get("instance_token"),
                 "user_tokens": tokens, "push_pending": False},
        next_run_at=changes.get("next_renewal_at"),
        note=note,
    )


def handle_provisioned_or_check(attempt: Attempt, ports: Ports) -> Decision:
    """PROVISIONED: the follow-up duplicate check when it is due, else the renewal step."""
    check = exactly_once.duplicate_check(attempt, ports)
    if check is not None:
        return check
    return exactly_once.keep_check(attempt, handle_provisioned(attempt, ports))


HANDLERS: dict[State, Handler] = {
    State.NEW: handle_new,
    State.TOKEN_ISSUED: handle_token_issued,
    State.REDIRECTED: handle_redirected,
    State.CALLBACK_RECEIVED: handle_callback_received,
    State.PROVISIONED: handle_provisioned_or_check,
    State.DISCONNECTING: handle_disconnecting,
}

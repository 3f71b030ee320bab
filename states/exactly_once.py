"""Exactly one instance per attempt, also for slow platforms, cancels and crashes (issue 16 item 8).

POST /instances is not idempotent, and its answer can be lost after the platform received it (a
read timeout, a connection reset after sending; the platform may commit seconds later). The
create step therefore records what it knows as data in the attempt's (sealed) secrets blob, so
that the next run of the step, in any worker, acts on it:

- ``create_sent_at`` (ISO time): a POST went out whose outcome is unknown. No second POST goes out
  before ``create_sent_at + settle``; then a tag look-up adopts the instance, or, finding none,
  the step POSTs again. An operator cancel of an attempt whose create may be in flight sets it too,
  so a restart waits and looks up instead of creating a second instance.
- ``duplicate_check_at`` (ISO time): after PROVISIONED by a step that may have POSTed more than once,
  one follow-up tag look-up at this time deletes any instance that appeared late for the same tag,
  keeping the adopted one, and records ``PROVISIONED --remove_duplicate--> PROVISIONED`` with a
  note naming the deleted and the kept instance (the timeline and the event feed show it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from states.attempt import Attempt
from states.decisions import Advance, Decision, RetryLater, Stay
from states.model import Flow, State, Trigger
from states.ports import Ports

CREATE_SENT_AT = "create_sent_at"
DUPLICATE_CHECK_AT = "duplicate_check_at"
#: Error kinds of a POST whose request may have reached the platform although no answer came back.
AMBIGUOUS_KINDS = frozenset({"timeout", "connection"})


def when(value: Any) -> datetime | None:
    """A marker's time (stored as ISO text in the secrets blob), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def settle(ports: Ports) -> timedelta:
    """How long an ambiguous POST may still take to commit on the platform."""
    return timedelta(seconds=ports.settings.create_settle_s)


def settling(attempt: Attempt, ports: Ports) -> RetryLater | None:
    """Wait while an earlier, ambiguous POST of this attempt may still commit; None once settled."""
    sent_at = when(attempt.secrets.get(CREATE_SENT_AT))
    if sent_at is None or ports.now() >= sent_at + settle(ports):
        return None
    at = sent_at + settle(ports)
    if attempt.last_error and attempt.last_error.get("ambiguous_create"):
        return RetryLater(at, dict(attempt.last_error))  # still the same unanswered POST
    return RetryLater(at, {
        "kind": "create_settling",
        "message": f"an earlier POST /instances may still be committing; the tag is looked up at "
                   f"{at.isoformat()} before any second POST",
        "hint": "Nothing to do: the engine adopts the instance if it appears, or creates it then.",
    })


def ambiguous(attempt: Attempt, ports: Ports, sent_at: datetime, kind: str) -> RetryLater:
    """The decision after a POST that got no answer: record when it went out, look up later."""
    at = sent_at + settle(ports)
    return RetryLater(at, {
        "kind": kind,  # the transport's own kind (timeout, connection): classified as before
        "ambiguous_create": True,
        "message": f"POST /instances got no answer ({kind}); the platform may still create the "
                   f"instance, so the tag {attempt.instance_tag} is looked up at {at.isoformat()} "
                   f"before any second POST",
        "hint": "Nothing to do unless this repeats: then check the platform's latency and "
                "PROVISION_READ_TIMEOUT_SECONDS / PROVISION_CREATE_SETTLE_SECONDS.",
    }, secrets={CREATE_SENT_AT: sent_at.isoformat()})


def after_create(attempt: Attempt, ports: Ports, decision: Advance, *, maybe_twice: bool) -> Advance:
    """Clear the ambiguity marker; schedule one follow-up tag check when a second POST was possible."""
    secrets: dict[str, Any] = {}
    if CREATE_SENT_AT in attempt.secrets:
        secrets[CREATE_SENT_AT] = None
    next_run_at = decision.next_run_at
    if maybe_twice:
        check_at = ports.now() + settle(ports)
        secrets[DUPLICATE_CHECK_AT] = check_at.isoformat()
        next_run_at = check_at if next_run_at is None else min(next_run_at, check_at)
    if not secrets:
        return decision
    return replace(decision, secrets={**decision.secrets, **secrets}, next_run_at=next_run_at)


def duplicate_check(attempt: Attempt, ports: Ports) -> Decision | None:
    """The follow-up tag check if it is due: delete instances other than the adopted one."""
    check_at = when(attempt.secrets.get(DUPLICATE_CHECK_AT))
    if check_at is None or ports.now() < check_at:
        return None
    tag = attempt.instance_tag
    try:
        found = ports.call(lambda _n: ports.client.find_instances_by_tag(tag))
        extras = sorted({str(i.get("id")) for i in found} - {str(attempt.instance_id)})
        for extra in extras:
            ports.call(lambda _n, e=extra: ports.client.delete_instance(e))  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - the check is best effort now, so try again later
        if not hasattr(exc, "kind"):
            raise
        later = ports.now() + settle(ports)
        return Stay(secrets={DUPLICATE_CHECK_AT: later.isoformat()},
                    next_run_at=_earliest(later, attempt.next_renewal_at))
    done = {DUPLICATE_CHECK_AT: None}
    if not extras:
        return Stay(secrets=done, next_run_at=attempt.next_renewal_at)
    return Advance(Trigger.REMOVE_DUPLICATE, secrets=done, next_run_at=attempt.next_renewal_at,
                   note=f"deleted duplicate instance {', '.join(extras)} tagged {tag}; "
                        f"kept {attempt.instance_id}")


def keep_check(attempt: Attempt, decision: Decision) -> Decision:
    """A renewal step's decision, due again no later than a pending follow-up check."""
    check_at = when(attempt.secrets.get(DUPLICATE_CHECK_AT))
    if check_at is None or not isinstance(decision, (Advance, Stay)) or decision.next_run_at is None:
        return decision
    return replace(decision, next_run_at=min(decision.next_run_at, check_at))


@dataclass(frozen=True)
class InFlight:
    """What a cancel records when the attempt's create may be in flight."""

    secrets: dict[str, Any]
    note: str


def create_in_flight(attempt: Attempt, now: datetime) -> InFlight | None:
    """For a cancel: the marker and the operator's note if a POST /instances may be in flight.

    A create step may be running (the attempt is leased) or may have run (claimed before, or an
    ambiguous POST recorded). The cancelled attempt keeps ``create_sent_at``, so a restart waits a
    settle time and adopts an instance that appears instead of creating a second one; the history
    note tells the operator that an instance may still appear if the attempt is never restarted.
    """
    creates = attempt.state is State.CALLBACK_RECEIVED or (
        attempt.state is State.NEW and attempt.flow is Flow.QUICK)
    if not creates or attempt.instance_id:
        return None
    sent_at = attempt.secrets.get(CREATE_SENT_AT)
    if attempt.lease_owner is None and attempt.runs == 0 and sent_at is None:
        return None
    return InFlight({CREATE_SENT_AT: sent_at or now.isoformat()},
                    f"a create may be in flight: an instance tagged {attempt.instance_tag} may still "
                    f"appear; `provision restart` adopts it, or delete it on the platform")


def _earliest(a: datetime, b: datetime | None) -> datetime:
    return a if b is None else min(a, b)

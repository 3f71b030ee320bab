"""Event types and payloads (issue 10/12, DESIGN §11): a pure mapping from an outbox row.

Every committed transition has one event (migration 0004 writes the row). Its type says what the
transition means to an application:

==========================================  ==================================================
``attempt.token_issued``                    NEW --issue_token--> TOKEN_ISSUED (OAuth1)
``attempt.redirected``                      --redirect--> REDIRECTED; ``data.consent_url``
``attempt.callback_received``               the user came back; the instance is being created
``attempt.provisioned``                     PROVISIONED for the first time
``attempt.failed``                          a non-terminal state --fail--> FAILED
``attempt.restarted``                       FAILED --restart/reauthorize--> NEW (operator)
``connection.renewed``                      PROVISIONED --renew--> PROVISIONED
``connection.reauthorization_required``     PROVISIONED --fail--> FAILED (renewal_rejected)
``connection.recovered``                    PROVISIONED again after an earlier PROVISIONED
``connection.duplicate_removed``            PROVISIONED --remove_duplicate--> PROVISIONED: a late
                                            duplicate instance was deleted (the timeline's note names it)
``connection.disconnecting``                PROVISIONED/FAILED --disconnect--> DISCONNECTING
``connection.disconnected``                 DISCONNECTING --remove--> DISCONNECTED (states.disconnect)
``connection.unhealthy``                    PROVISIONED --check--> PROVISIONED (engine.core.health)
``attempt.connect_link``                    REDIRECTED --connect_link--> REDIRECTED: an operator made
                                            a connect link (the link itself is never in the event)
==========================================  ==================================================

The payload is ``{"type", "timestamp", "data": {...}}`` built from public columns only: the
element, name, tags, the state the transition reached, the failure reason with a hint, the error's
kind and message (scrubbed of secrets by the runner before they were stored), the instance id and,
for ``attempt.redirected``, the consent URL the user must open. The consent URL is included while
the attempt still waits at that redirect; afterwards it is spent and the field is null.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from engine.errors import HINTS, InvalidInputError
from persistence.outbox import OutboxEvent
from states.model import FailureReason, State, Trigger

TOKEN_ISSUED = "attempt.token_issued"
REDIRECTED = "attempt.redirected"
CALLBACK_RECEIVED = "attempt.callback_received"
PROVISIONED = "attempt.provisioned"
FAILED = "attempt.failed"
RESTARTED = "attempt.restarted"
RENEWED = "connection.renewed"
REAUTHORIZATION_REQUIRED = "connection.reauthorization_required"
RECOVERED = "connection.recovered"
DISCONNECTING = "connection.disconnecting"
DUPLICATE_REMOVED = "connection.duplicate_removed"
DISCONNECTED = "connection.disconnected"
UNHEALTHY = "connection.unhealthy"
CONNECT_LINK = "attempt.connect_link"

#: Every event type, in the order of a connection's life (hooks may filter on any of them).
EVENT_TYPES: tuple[str, ...] = (
    TOKEN_ISSUED, REDIRECTED, CALLBACK_RECEIVED, PROVISIONED, FAILED, RESTARTED, RENEWED,
    REAUTHORIZATION_REQUIRED, RECOVERED, DUPLICATE_REMOVED, DISCONNECTING, DISCONNECTED, UNHEALTHY,
    CONNECT_LINK,
)

# PROVISIONED --x--> PROVISIONED transitions that are not a (re)provisioning.
_REFLEXIVE = frozenset({Trigger.RENEW.value, Trigger.REMOVE_DUPLICATE.value, Trigger.CHECK.value})
_BY_TRIGGER = {
    Trigger.ISSUE_TOKEN.value: TOKEN_ISSUED,
    Trigger.REDIRECT.value: REDIRECTED,
    Trigger.RECEIVE_CALLBACK.value: CALLBACK_RECEIVED,
    Trigger.RENEW.value: RENEWED,
    Trigger.REMOVE_DUPLICATE.value: DUPLICATE_REMOVED,
    Trigger.RESTART.value: RESTARTED,
    Trigger.CHECK.value: UNHEALTHY,
    Trigger.DISCONNECT.value: DISCONNECTING,
    Trigger.REMOVE.value: DISCONNECTED,
    Trigger.REAUTHORIZE.value: RESTARTED,  # the attempt starts over too; PROVISIONED again is RECOVERED
    Trigger.CONNECT_LINK.value: CONNECT_LINK,
}


def event_types(types: Iterable[str] | str | None, field: str = "types") -> frozenset[str] | None:
    """``types`` (one type or several) as a set, checked against ``EVENT_TYPES``; None for all.

    ``field`` names the input in the error (``--type`` for the CLI)."""
    if types is None:
        return None
    wanted = frozenset([types] if isinstance(types, str) else types)
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown or not wanted:
        raise InvalidInputError(field, f"unknown event types {unknown or '(none given)'}; "
                                       f"known: {', '.join(EVENT_TYPES)}")
    return wanted


def may_have_type(types: frozenset[str]) -> tuple[frozenset[str], bool]:
    """What a transition must have to be one of ``types``: one of these triggers, or (when the
    flag is True) PROVISIONED as its destination. A superset, for the database to filter on;
    ``event_type`` decides exactly."""
    triggers = {trigger for trigger, kind in _BY_TRIGGER.items() if kind in types}
    if types & {FAILED, REAUTHORIZATION_REQUIRED}:
        triggers.add(Trigger.FAIL.value)
    return frozenset(triggers), bool(types & {PROVISIONED, RECOVERED})


# What to do about each failure reason (the error's own hint, when it has one, comes first).
REASON_HINTS: dict[str, str] = {
    "instance_missing": "The instance is gone from the platform; start a new attempt for the customer.",
    "instance_disabled": "The instance is disabled on the platform; enable it there, then `provision check`.",
    "instance_invalid": ("The platform can no longer use the provider tokens; ask the user for consent "
                         "again (`provision reauthorize ID` once it has failed, or a new attempt)."),
    "provider_rejected": ("The provider (Intuit) refused the engine's token for this connection (401 on a "
                          "read): the user revoked the app or the token expired; ask the user for consent "
                          "again (`provision reauthorize ID` once it has failed, or a new attempt)."),
    FailureReason.USER_DENIED.value: "The user declined consent; start a new attempt when they are ready.",
    FailureReason.CALLBACK_TIMEOUT.value: (
        "The user did not finish consent in time; start a new attempt (or raise --callback-wait)."),
    FailureReason.RETRIES_EXHAUSTED.value: (
        "The platform kept failing; check its status, then `provision restart` the attempt."),
    FailureReason.PERMANENT_ERROR.value: "The platform refused the request; see error.message.",
    FailureReason.INVALID_DATABASE.value: HINTS["invalid_database"],
    FailureReason.RENEWAL_REJECTED.value: (
        "The provider rejected the stored tokens; ask the user for consent again with "
        "`provision reauthorize ID` (Engine.reauthorize)."),
    FailureReason.CANCELLED.value: "An operator cancelled the attempt.",
    FailureReason.DUPLICATE_CONNECTION.value: (
        "The provider account (realmId) is already connected by the live attempt named in "
        "error.message; keep that one, or disconnect it, or start again with --replace."),
}
_REASONS = frozenset(r.value for r in FailureReason)


def event_type(row: OutboxEvent) -> str:
    """The type of the event for ``row``'s transition (see the module's table)."""
    if row.trigger == Trigger.FAIL.value:
        return REAUTHORIZATION_REQUIRED if row.source == State.PROVISIONED.value else FAILED
    if row.dest == State.PROVISIONED.value and row.trigger not in _REFLEXIVE:
        return RECOVERED if row.reprovisioned else PROVISIONED
    return _BY_TRIGGER.get(row.trigger, f"attempt.{row.trigger}")


def failure_reason(row: OutboxEvent) -> str | None:
    """Why a fail transition failed: the history note or error kind that names a known reason.

    For ``connection.unhealthy`` it is what the health check found (``states.health``).
    """
    if row.trigger == Trigger.CHECK.value:
        return row.note
    if row.trigger != Trigger.FAIL.value:
        return None
    kind = row.error.get("kind") if isinstance(row.error, dict) else None
    for candidate in (row.note, kind):
        if candidate in _REASONS:
            return str(candidate)
    return FailureReason.PERMANENT_ERROR.value


def _hint(row: OutboxEvent, reason: str | None) -> str | None:
    if reason is None:
        return None
    error = row.error if isinstance(row.error, dict) else {}
    given = error.get("hint")
    if isinstance(given, str) and given:
        return given
    kind = error.get("kind")
    return (HINTS.get(str(kind)) if kind else None) or REASON_HINTS.get(reason)


def _error(row: OutboxEvent) -> dict[str, Any] | None:
    if not isinstance(row.error, dict):
        return None
    # Only the documented, secret-free fields of engine.errors' to_dict(); nothing else is copied.
    keep = ("kind", "status", "message", "provider_message", "request_id")
    return {k: row.error[k] for k in keep if row.error.get(k) is not None} or None


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event as hooks, the feed and webhooks see it; ``payload`` is what is sent."""

    seq: int
    type: str
    attempt_id: str
    timestamp: datetime
    data: dict[str, Any]

    @property
    def webhook_id(self) -> str:
        """Stable per event and unique across databases (attempt ids are UUIDs): the dedup key."""
        return f"msg_{self.attempt_id}_{self.data['history_seq']}"

    @property
    def payload(self) -> dict[str, Any]:
        """``{"type", "timestamp", "data"}``, JSON-ready."""
        return {"type": self.type, "timestamp": _iso(self.timestamp), "data": self.data}

    def as_dict(self) -> dict[str, Any]:
        """The payload with the feed's cursor (``seq``) and the webhook id: ``provision events --json``."""
        return {"seq": self.seq, "id": self.webhook_id, **self.payload}


class EventPage(list[Event]):
    """A page of the feed: its events, oldest first, and ``cursor``, the ``after`` of the next read.

    ``cursor`` is the last event's ``seq``, or ``after`` for an empty page. A read filtered by
    type may move it further, past events of other types it has looked at: a reader of a rare type
    resumes there instead of looking at them again on every read.
    """

    def __init__(self, events: Iterable[Event], cursor: int) -> None:
        super().__init__(events)
        self.cursor = cursor


def to_event(row: OutboxEvent, consent_url: str | None = None) -> Event:
    """The ``Event`` for ``row``; ``consent_url`` is used only for ``attempt.redirected``."""
    kind = event_type(row)
    reason = failure_reason(row)
    data: dict[str, Any] = {
        "attempt_id": row.attempt_id,
        "customer": row.customer,
        "element": row.element_key,
        "flow": row.flow,
        "name": row.name,
        "tags": list(row.tags),
        "state": row.dest,
        "previous_state": row.source,
        "trigger": row.trigger,
        "reason": reason,
        "hint": _hint(row, reason),
        "error": _error(row) if reason is not None else None,
        "instance_id": row.instance_id,
        "history_seq": row.history_seq,
    }
    if kind == REDIRECTED:
        data["consent_url"] = consent_url
    return Event(row.seq, kind, row.attempt_id, row.created_at, data)

"""The realmId duplicate guard at callback time (issue 10/12 must-have 3, last bullet).

Cloud Elements warns that "if one user tries to authenticate to multiple instances, the oldest
instance will get wiped out" (devportal ``quickbooksonline/tips.md``). The start-time guard
(``engine.core.guard``) only knows the customer; which QuickBooks company (``realmId``) the user
picked is known only when the provider's callback arrives. So the step after CALLBACK_RECEIVED
claims the realm *before* it creates any instance: the claim is one race-safe statement on the
``realm_claims`` table (``persistence.realms``), whose primary key lets one attempt per element and
realm hold it. A claim held by an attempt that is no longer live (FAILED, DISCONNECTED), or by the
attempt this one replaces (``--replace``), is taken over; a live holder refuses the claim, and the
attempt fails with ``duplicate_connection`` and a hint naming the live attempt.

The check runs in the worker, not in the receiver: the receiver stays one cheap guarded statement
per callback, and the refusal is an ordinary failed transition (history row, ``attempt.failed``).

A quick start brings its realm in the configuration (``quickbooks.realm.id``), so its realm is
known at start (``realm_at_start``) and claimed in the transaction that inserts the attempt
(``engine.core.realm_start``): a realm held by a live attempt is refused synchronously, before
anything is stored. Its step claims the realm again before it creates the instance
(``quick_refusal``): a no-op for the holder, but a FAILED quick attempt restarted after another
attempt took its stale claim over fails instead of wiping that attempt's instance.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from states.attempt import Attempt
from states.decisions import Fail
from states.model import FailureReason, Flow, State
from states.ports import Ports

#: The configuration entry in which a quick start names its QuickBooks company (realmId).
REALM_CONFIG_KEY = "quickbooks.realm.id"
#: What a realm id may look like: Intuit's are digits; 64 is the width of the realm columns.
REALM_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)

#: States in which an attempt no longer holds (or is about to hold) the customer's connection.
NOT_LIVE: frozenset[State] = frozenset({State.FAILED, State.DISCONNECTED})
#: ``NOT_LIVE`` as the stored state values, sorted (a stable order for SQL ``IN`` lists).
NOT_LIVE_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in NOT_LIVE))


def realm_of(attempt: Attempt) -> str | None:
    """The realmId the applied callback carried (QuickBooks only), or None."""
    callback = attempt.secrets.get("callback")
    realm = callback.get("realmId") if isinstance(callback, dict) else None
    return str(realm) if realm not in (None, "") else None


def realm_at_start(flow: Flow, config: Mapping[str, Any]) -> str | None:
    """The realmId a start already names, or None: only a quick start brings one (its configuration's
    ``quickbooks.realm.id``); consent flows learn it from the callback (``realm_of``)."""
    if flow is not Flow.QUICK:
        return None
    value = config.get(REALM_CONFIG_KEY)
    return str(value) if value not in (None, "") else None


def quick_refusal(attempt: Attempt, ports: Ports) -> Fail | None:
    """Before a quick attempt creates its instance: a refusal when a live attempt holds its realm."""
    realm_id = attempt.realm_id
    if attempt.flow is not Flow.QUICK or realm_id is None:
        return None
    holder = ports.claim_realm(attempt, realm_id)
    return None if holder is None else refused(attempt, realm_id, holder)


def refused(attempt: Attempt, realm_id: str, holder: str) -> Fail:
    """The decision for an attempt whose realm is already connected by the live attempt ``holder``."""
    error: dict[str, Any] = {
        "kind": "duplicate_connection",
        "message": f"realmId {realm_id} of element {attempt.element_key} is already connected by "
                   f"live attempt {holder}; no instance was created",
        "hint": f"Keep attempt {holder}, or disconnect it first (`provision disconnect {holder}`), or "
                "start a new attempt with --replace for that attempt's customer.",
        "live_attempt": holder,
    }
    return Fail(FailureReason.DUPLICATE_CONNECTION, error, changes={"realm_id": realm_id})

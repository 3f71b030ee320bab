"""The duplicate-connection guard and ``--replace`` (issue 10/12 must-have 3).

Cloud Elements warns that when one user authenticates to several instances, "the oldest instance
will get wiped out" (devportal ``quickbooksonline/tips.md``). So a second attempt for the same
customer and element is refused while one is *live*: any state but FAILED and DISCONNECTED. The
error names the live attempt.

``replace=True`` (``--replace``) lets the new attempt start anyway and records the live one in the
new row's ``replaces`` column. Once the new attempt is PROVISIONED, ``retire_replaced`` (run by
every tick) cancels the old one if it is still onboarding and disconnects it (``states.disconnect``).
The column makes this durable: a worker that dies after the PROVISIONED commit leaves the work to
the next tick, whoever runs it.

This check is a read before the insert, which gives each refusal its item and message; two
starts racing within milliseconds for the same customer could both pass it. The insert's
transaction looks again, serialised between writers (``persistence.customer_guard``), and refuses
the later one with the same ``DuplicateConnectionError``. Not a unique index: ``replace`` means
two live attempts for a while.

The realmId is known only at callback time: that guard runs in the step after CALLBACK_RECEIVED
(``states.realm``), and is race-safe (a claim row per element and realm, ``persistence.realms``).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from engine.core.intake import StartRequest
from engine.errors import DuplicateConnectionError, ProvisionError
from persistence.repository import Repository
from states.attempt import Attempt
from states.model import State
from states.realm import NOT_LIVE  # the same "live" for the customer and the realm guard

log = logging.getLogger(__name__)



def check_no_live_duplicate(repo: Repository, requests: Sequence[StartRequest]) -> list[StartRequest]:
    """Refuse any request whose customer already has a live attempt for its element.

    Returns the requests, those with ``replace`` carrying the live attempt they replace. Requests
    without a customer are not checked. Two requests of one batch for the same customer and
    element are duplicates of each other unless the later replaces.
    """
    out: list[StartRequest] = []
    seen: dict[tuple[str, str], tuple[int, str | None]] = {}
    for i, req in enumerate(requests):
        if req.customer is None:
            out.append(req)
            continue
        key = (req.customer, req.element_key)
        first = seen.get(key)
        if first is not None and not req.replace and not _same_key(first[1], req.idempotency_key):
            raise DuplicateConnectionError(req.customer, req.element_key, f"items[{first[0]}]",
                                           "in this batch")
        live = [a for a in repo.attempts_of_customer(req.customer, req.element_key)
                # A repeated start with the attempt's own idempotency key returns it: not a duplicate.
                if a.state not in NOT_LIVE and not _same_key(a.idempotency_key, req.idempotency_key)]
        if live and not req.replace:
            raise DuplicateConnectionError(req.customer, req.element_key, live[0].id, live[0].state.value)
        out.append(dataclasses.replace(req, replaces=live[0].id) if live else req)
        seen.setdefault(key, (i, req.idempotency_key))
    return out


def _same_key(a: str | None, b: str | None) -> bool:
    return a is not None and a == b


def retire_replaced(repo: Repository, cancel: Callable[[str], Attempt],
                    disconnect: Callable[[str], Attempt]) -> int:
    """Disconnect every attempt replaced by a PROVISIONED one; how many were moved.

    One failing attempt (it moved meanwhile, a database hiccup) is logged and left for the next
    tick; the others still go.
    """
    moved = 0
    for old_id, old_state in repo.replaced_to_retire():
        try:
            if old_state not in (State.PROVISIONED.value, State.FAILED.value):
                cancel(old_id)  # still onboarding: stop it first (DISCONNECT leaves PROVISIONED/FAILED)
            disconnect(old_id)
            moved += 1
            log.info("attempt %s replaced: disconnecting it", old_id)
        except ProvisionError as exc:
            log.warning("could not retire replaced attempt %s: %s", old_id, exc)
    return moved


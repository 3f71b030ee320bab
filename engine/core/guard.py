"""The duplicate-connection guard (issue 10/12 must-have 3).

Cloud Elements warns that when one user authenticates to several instances, "the oldest instance
will get wiped out" (devportal ``quickbooksonline/tips.md``). So a second attempt for the same
customer and element is refused while one is *live*: any state but FAILED and DISCONNECTED. The error names the
live attempt; ``replace=True`` (``--replace``) lets the new attempt start anyway.

The check is a read before the insert, not a constraint: two starts racing within milliseconds
for the same customer can both pass. A unique partial index would close that race, but it would
also refuse ``replace``, whose point is two live attempts for a while.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.core.intake import StartRequest
from engine.errors import DuplicateConnectionError
from persistence.repository import Repository
from states.model import State

#: States in which an attempt no longer holds (or is about to hold) the customer's connection.
NOT_LIVE: frozenset[State] = frozenset({State.FAILED, State.DISCONNECTED})


def check_no_live_duplicate(repo: Repository, requests: Sequence[StartRequest]) -> None:
    """Refuse any request whose customer already has a live attempt for its element.

    Requests without a customer, or with ``replace``, are not checked. Two requests of one batch
    for the same customer and element are duplicates of each other unless the later replaces.
    """
    seen: dict[tuple[str, str], tuple[int, str | None]] = {}
    for i, req in enumerate(requests):
        if req.customer is None:
            continue
        key = (req.customer, req.element_key)
        if not req.replace:
            first = seen.get(key)
            if first is not None and not _same_key(first[1], req.idempotency_key):
                raise DuplicateConnectionError(req.customer, req.element_key, f"items[{first[0]}]",
                                               "in this batch")
            for live in repo.attempts_of_customer(req.customer, req.element_key):
                # A repeated start with the attempt's own idempotency key returns it: not a duplicate.
                if live.state not in NOT_LIVE and not _same_key(live.idempotency_key, req.idempotency_key):
                    raise DuplicateConnectionError(req.customer, req.element_key, live.id, live.state.value)
        seen.setdefault(key, (i, req.idempotency_key))


def _same_key(a: str | None, b: str | None) -> bool:
    return a is not None and a == b

"""Creating attempts: one (``Engine.start``) or many in one transaction (``Engine.start_many``).

A back-office job that enrols a list of customer accounts wants them all or none: a typo in
item 37 should be reported before item 1 is stored, and the list should cost one commit, not
one per item. ``start_many`` validates every item first, then inserts the new ones in a single
transaction. Idempotency keys keep their ``start`` meaning per item: a key already used returns
the stored attempt (same inputs) or is refused (other inputs).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from engine.core.guard import check_no_live_duplicate
from engine.core.intake import StartRequest, shown, validate_start
from engine.core.realm_start import check_realms, insert_claiming
from engine.errors import ConcurrentUpdateError, InvalidInputError
from persistence.repository import Repository
from states.attempt import Attempt
from states.model import Flow, State
from states.realm import realm_at_start

MAX_START_MANY = 1000  # one transaction; bigger lists are split by the caller
START_KEYS = frozenset({"element", "name", "flow", "api_key", "api_secret", "callback_url", "tags", "config",
                        "idempotency_key", "callback_wait_s", "customer", "replace",
                        "renewal"})


def new_attempt(req: StartRequest, now: datetime) -> Attempt:
    """The NEW attempt, due now, that a validated request creates."""
    return Attempt(
        id=str(uuid.uuid4()), element_key=req.element_key, flow=req.flow, name=req.name, state=State.NEW,
        version=1, created_at=now, updated_at=now, tags=req.tags, idempotency_key=req.idempotency_key,
        next_run_at=now, callback_wait_s=req.callback_wait_s, customer=req.customer, replaces=req.replaces,
        renewal_owner=req.renewal_owner.value, realm_id=realm_at_start(req.flow, req.config),
        secrets={"config": req.config},
    )


def _inputs(x: Attempt | StartRequest) -> tuple[str, Flow, str, str | None]:
    """What a reused idempotency key must come with again: element, flow, name and customer."""
    return x.element_key, x.flow, x.name, x.customer


def check_same_inputs(stored: Attempt, req: StartRequest, field: str = "idempotency_key") -> None:
    """An idempotency key may only be reused with the inputs it was first used with."""
    if _inputs(stored) != _inputs(req):
        raise InvalidInputError(field, f"already used by attempt {stored.id} with other inputs")


def _item_error(index: int, exc: InvalidInputError) -> InvalidInputError:
    """``exc`` with its field prefixed by the item's position, e.g. ``items[3].callback_url``."""
    # The same class (a MissingConfigurationError stays one) with the same attributes and hint;
    # copy.copy cannot rebuild it, as __init__'s arguments differ from ``args``.
    err = type(exc).__new__(type(exc))
    err.__dict__.update(exc.__dict__)
    err.field = f"items[{index}].{exc.field}"
    err.message = f"items[{index}].{exc.message}"
    err.args = (err.message,)
    return err


def validate_items(items: Iterable[Mapping[str, Any]]) -> list[StartRequest]:
    """Every item checked (``validate_start``) before anything is stored; errors name the item."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidInputError("items", "must be a list of mappings of start() keywords")
    batch = list(items)
    if len(batch) > MAX_START_MANY:
        raise InvalidInputError("items", f"at most {MAX_START_MANY} per call, got {len(batch)}",
                                hint="Split the list and call start_many once per part.")
    requests: list[StartRequest] = []
    first_by_key: dict[str, int] = {}
    for i, item in enumerate(batch):
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"items[{i}]", "must be a mapping of start() keywords")
        unknown = sorted(k if isinstance(k, str) else shown(k) for k in item if k not in START_KEYS)
        if unknown:
            raise InvalidInputError(f"items[{i}].{unknown[0][:40]}", "is not a start() keyword",
                                    hint=f"Use only: {', '.join(sorted(START_KEYS))}.")
        for required in ("element", "name"):
            if required not in item:
                raise InvalidInputError(f"items[{i}].{required}", "is required")
        kw: dict[str, Any] = {k: item.get(k) for k in START_KEYS}
        kw["replace"] = item.get("replace", False)
        try:
            req = validate_start(**kw)
        except InvalidInputError as exc:
            raise _item_error(i, exc) from None
        key = req.idempotency_key
        if key is not None and key in first_by_key:
            j = first_by_key[key]
            if _inputs(requests[j]) != _inputs(req):
                raise InvalidInputError(f"items[{i}].idempotency_key",
                                        f"same key as items[{j}] with other inputs")
        elif key is not None:
            first_by_key[key] = i
        requests.append(req)
    return requests


def start_many(repo: Repository, requests: Sequence[StartRequest],
               now: datetime, *, single: bool = False) -> list[tuple[Attempt, bool]]:
    """Store the requests' attempts in one transaction: ``(attempt, created)`` per request, in order.

    A key repeated within the list yields the first item's attempt (``validate_items`` checked
    that the inputs agree). A key stored earlier yields the stored attempt; if its inputs differ,
    ``InvalidInputError`` names the item and nothing is stored. When another caller takes one
    of the keys between our lookup and our insert, the insert stores nothing and we look again.
    A quick start's realm is claimed in the same transaction (``engine.core.realm_start``): a realm
    a live attempt holds refuses the whole batch. ``single``: errors name ``config``, not an item.
    """
    requests = check_realms(repo, check_no_live_duplicate(repo, requests), single=single)
    keys = {r.idempotency_key for r in requests if r.idempotency_key is not None}
    for _ in range(5):
        stored = repo.attempts_by_idempotency_keys(sorted(keys)) if keys else {}
        out: list[tuple[Attempt, bool]] = []
        first: dict[str, Attempt] = {}
        for i, req in enumerate(requests):
            key = req.idempotency_key
            if key is not None and key in stored:
                check_same_inputs(stored[key], req, f"items[{i}].idempotency_key")
                out.append((stored[key], False))
            elif key is not None and key in first:
                out.append((first[key], False))
            else:
                attempt = new_attempt(req, now)
                if key is not None:
                    first[key] = attempt
                out.append((attempt, True))
        if insert_claiming(repo, [(i, a) for i, (a, created) in enumerate(out) if created], now,
                           single=single):
            return out
    raise ConcurrentUpdateError("idempotency keys keep being taken by other callers; try again")

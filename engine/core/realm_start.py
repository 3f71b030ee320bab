"""The realm guard at start: a quick start naming a QuickBooks company that a live attempt already
connects is refused synchronously (issue 10/12 must-have 3).

Cloud Elements warns that "if one user tries to authenticate to multiple instances, the oldest
instance will get wiped out" (devportal ``quickbooksonline/tips.md``). Consent flows learn the
realmId from the callback and claim it in the worker (``states.realm``). A quick start brings it in
``quickbooks.realm.id``, so it is claimed at start, in the transaction that inserts the attempt
(``Repository.insert_claiming``): a refused start stores nothing, and of two starts racing for one
realm exactly one commits. ``DuplicateRealmError`` names the live attempt and ``replace``; the CLI
exits 2.

``replace=True`` (``--replace``) takes the claim over, as the callback path does: the new attempt
records the realm's live holder in ``replaces``, and ``engine.core.guard.retire_replaced``
disconnects that one once the new attempt is PROVISIONED. A replacing start whose customer already
has another live attempt (the one it replaces) and whose realm is held by a third is refused: one
attempt replaces one.

``start_many`` refuses the whole batch, before anything is stored, and the error names every
conflicting item (``items[3].config``), including two items naming the same realm. The common path
costs one multi-row INSERT of the claims per batch; the holders are read only for replacing starts
and for claims that already exist.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from engine.core.intake import StartRequest
from engine.errors import ConcurrentUpdateError, DuplicateConnectionError, InvalidInputError
from persistence.customer_guard import CustomersHeldError
from persistence.realms import RealmClaimContendedError, RealmsHeldError
from persistence.repository import Repository
from states.attempt import Attempt
from states.realm import NOT_LIVE_VALUES, REALM_CONFIG_KEY, REALM_ID_RE, realm_at_start

_ROUNDS = 3  # a claim changing hands under our compare-and-set: look again


class DuplicateRealmError(DuplicateConnectionError):
    """A start names a realm (QuickBooks company) that a live attempt already connects.

    ``conflicts`` holds ``(field, holder)`` per refused start: the holder is a live attempt's id,
    or ``items[j]`` for an earlier item of the same batch. ``live_attempt_id`` is the first live one.
    """

    kind = "duplicate_connection"

    def __init__(self, conflicts: Sequence[tuple[str, str, str]]) -> None:
        # (field, realm, holder) per refused start; the error is filed under the first field.
        field, realm, holder = conflicts[0]
        rest = [f"{f}: {_held(r, h)}" for f, r, h in conflicts[1:]]
        InvalidInputError.__init__(
            self, field, "; ".join([_held(realm, holder), *rest, "nothing was stored"]),
            hint="Use that attempt, or start again with --replace (replace=True) to disconnect it once "
                 "the new one is PROVISIONED, or disconnect it first (`provision disconnect ID`).")
        self.conflicts = [(f, h) for f, _, h in conflicts]
        self.live_attempt_id = next((h for _, _, h in conflicts if not h.startswith("items[")), "")


def _held(realm: str, holder: str) -> str:
    by = f"{holder} of this batch" if holder.startswith("items[") else f"live attempt {holder}"
    return f"{REALM_CONFIG_KEY} {realm} is already connected by {by}"


def _field(index: int, single: bool) -> str:
    return "config" if single else f"items[{index}].config"


def check_realms(repo: Repository, requests: Sequence[StartRequest], *, single: bool) -> list[StartRequest]:
    """Check the realms the requests name; return them, replacing ones carrying the realm's holder.

    Raises ``InvalidInputError`` for a malformed realm id and ``DuplicateRealmError`` for items of
    one batch naming one realm, or a replacing start whose realm's holder it cannot replace.
    Realms held by live attempts are refused later, atomically, by ``insert_claiming``.
    """
    conflicts: list[tuple[str, str, str]] = []
    first: dict[tuple[str, str], tuple[int, str | None]] = {}
    replacing: dict[int, tuple[str, str]] = {}
    for i, req in enumerate(requests):
        realm = realm_at_start(req.flow, req.config)
        if realm is None:
            continue
        if not REALM_ID_RE.fullmatch(realm):
            raise InvalidInputError(_field(i, single), f"{REALM_CONFIG_KEY} must be 1 to 64 letters, digits "
                                    "and ._- (the QuickBooks company id, e.g. 123146096291789)")
        key = (req.element_key, realm)
        if key in first:
            j, idem = first[key]
            if idem is None or idem != req.idempotency_key:  # the same key returns the same attempt
                conflicts.append((_field(i, single), realm, f"items[{j}]"))
            continue
        first[key] = (i, req.idempotency_key)
        if req.replace:
            replacing[i] = key
    out = list(requests)
    holders = repo.live_realm_holders(set(replacing.values()), NOT_LIVE_VALUES) if replacing else {}
    for i, key in replacing.items():
        holder = holders.get(key)
        req = out[i]
        if holder is None or (req.idempotency_key is not None and holder[1] == req.idempotency_key):
            continue
        if req.replaces not in (None, holder[0]):
            # The customer's live attempt is another one: this start cannot replace both.
            conflicts.append((_field(i, single), key[1], holder[0]))
            continue
        out[i] = dataclasses.replace(req, replaces=holder[0])
    if conflicts:
        raise DuplicateRealmError(conflicts)
    return out


def insert_claiming(repo: Repository, batch: Sequence[tuple[int, Attempt]], now: datetime, *,
                    single: bool) -> bool:
    """Insert the new attempts (``(item index, attempt)``) and claim their realms in ONE transaction.

    False when another caller took an idempotency key (as ``Repository.insert_attempts``).
    Raises ``DuplicateConnectionError`` when a customer's live attempt was stored since
    ``engine.core.guard`` looked (the race it cannot close), and ``DuplicateRealmError`` naming
    every item whose realm a live attempt holds; then nothing was stored.
    """
    attempts = [a for _, a in batch]
    for _ in range(_ROUNDS):
        try:
            if all(a.realm_id is None for a in attempts):
                return repo.insert_attempts(attempts)  # no realm known at start: the plain path
            return repo.insert_claiming(attempts, not_live=NOT_LIVE_VALUES, now=now)
        except CustomersHeldError as exc:  # a concurrent start for the customer committed first
            a = next(a for a in attempts if a.id in exc.held)
            raise DuplicateConnectionError(str(a.customer), a.element_key, *exc.held[a.id]) from None
        except RealmsHeldError as exc:
            raise DuplicateRealmError([(_field(i, single), str(a.realm_id), exc.held[a.id])
                                       for i, a in batch if a.id in exc.held]) from None
        except RealmClaimContendedError:
            continue
    raise ConcurrentUpdateError("realm claims keep changing hands; try again")

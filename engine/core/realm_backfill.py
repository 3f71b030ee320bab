"""Realm claims for attempts made before migration 0010 (issue 17): the duplicate guard sees old connections.

Migration 0010 added ``attempts.realm_id`` and ``realm_claims``, but an attempt connected before it
keeps its realmId (QuickBooks company) only inside its encrypted secrets, which a migration cannot
open. Until it is copied out, the realm guard (``states.realm``) does not see that connection, and a
new consent for the same company would create a second instance ("the oldest instance will get
wiped out", devportal ``quickbooksonline/tips.md``).

``backfill_realms`` does it with the keys, once: migration 0011 leaves a ``realm_ids`` row in
``backfills`` when live attempts without a realm_id exist, and the step deletes it when done. It runs
in ``provision db upgrade`` (after the migrations, when a key is configured) and whenever
``open_engine`` opens an engine; there the common case costs one primary-key lookup.

What it does, per live attempt without a realm_id, oldest first, batch by batch (resumable):

- the realm is the stored callback's ``realmId`` (consent flows), else the configuration's
  ``quickbooks.realm.id`` (quick starts, and the configuration the instance was created with);
- an attempt that holds an instance claims its realm (``Repository.claim_realm``) and records it in
  ``attempts.realm_id``. When two old attempts share a realm, the oldest live one holds the claim;
  the other keeps running (it is not failed: it may be the connection the customer uses) and is
  reported as a conflict for the operator, with a warning in the log;
- a quick start that has no instance yet only records its realm: its step claims it before it
  creates the instance (``states.realm.quick_refusal``), as for attempts started after 0010;
- consent attempts without an instance are left alone: the step after their callback claims;
- a row no configured key opens is skipped and counted, never fatal; later runs (every engine
  open) try the skipped rows again, so the step completes once the right key is configured.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persistence import backfills as bf
from persistence.realms import RealmClaimContendedError
from persistence.repository import Repository
from states.model import Flow
from states.realm import NOT_LIVE_VALUES, REALM_CONFIG_KEY, REALM_ID_RE

log = logging.getLogger(__name__)

#: Rows per batch: each batch is one read and its progress one small write.
BATCH = 200


@dataclass(frozen=True)
class RealmConflict:
    """Two live attempts made before migration 0010 connect one realm: ``holder`` keeps the claim."""

    element_key: str
    realm_id: str
    holder: str
    attempt_id: str


@dataclass
class BackfillReport:
    """What one run of the realm backfill found and did (no secrets in it)."""

    pending: bool = False  # False: nothing to do (the common case; nothing else was read)
    visited: int = 0  # live attempts without a realm_id that were looked at
    claimed: int = 0  # realm_id recorded and the realm claimed (attempts holding an instance)
    recorded: int = 0  # realm_id recorded only (quick starts without an instance: their step claims)
    no_realm: int = 0  # readable, but neither a callback realmId nor quickbooks.realm.id
    unreadable: int = 0  # no configured key opens the row: skipped, tried again by later runs
    conflicts: list[RealmConflict] = field(default_factory=list)
    done: bool = False  # every row handled: the step will not run again

    def lines(self) -> list[str]:
        """The report for an operator: one summary line, then one line per conflict."""
        if not self.pending:
            return ["realm backfill: nothing to do"]
        state = "done" if self.done else f"{self.unreadable} unreadable row(s) skipped, tried again later"
        out = [f"realm backfill: {self.visited} attempt(s) visited, {self.claimed} realm(s) claimed, "
               f"{self.recorded} recorded, {self.no_realm} without a realm, "
               f"{len(self.conflicts)} conflict(s); {state}"]
        out += [f"  conflict: realmId {c.realm_id} of {c.element_key} is connected by {c.holder} (holds the "
                f"claim) and by {c.attempt_id}; keep one and disconnect the other (`provision disconnect ID`)"
                for c in self.conflicts]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (``provision db upgrade --json``)."""
        return {"pending": self.pending, "visited": self.visited, "claimed": self.claimed,
                "recorded": self.recorded, "no_realm": self.no_realm, "unreadable": self.unreadable,
                "done": self.done, "conflicts": [c.__dict__ for c in self.conflicts]}


def stored_realm(secrets: Mapping[str, Any], callback: Mapping[str, Any] | None) -> str | None:
    """The realmId an attempt's stored data names: the applied callback's ``realmId`` (sealed apart
    since migration 0003, inside ``secrets`` before), else the configuration's ``quickbooks.realm.id``."""
    cb = callback if callback is not None else secrets.get("callback")
    config = secrets.get("config")
    candidates = [cb.get("realmId") if isinstance(cb, Mapping) else None,
                  config.get(REALM_CONFIG_KEY) if isinstance(config, Mapping) else None]
    for value in candidates:
        if value not in (None, "") and REALM_ID_RE.fullmatch(str(value)):
            return str(value)
    return None


def backfill_pending(db: sa.Engine) -> bool:
    """Whether the realm backfill has work left (one primary-key lookup; needs no key)."""
    return bf.read_mark(db, bf.REALM_IDS) is not None


def backfill_realms(repo: Repository, *, now: Callable[[], datetime], batch: int = BATCH) -> BackfillReport:
    """Copy the realm of live pre-0010 attempts out of their secrets and claim it (module doc).

    Idempotent and resumable: progress is committed after every batch; a run after the step is done
    is one primary-key lookup. ``now`` (the database clock) is read only when there is work.
    """
    mark = bf.read_mark(repo.engine, bf.REALM_IDS)
    report = BackfillReport(pending=mark is not None)
    if mark is None:
        return report
    skipped = list(mark.skipped)
    if not mark.scanned:
        after = mark.after
        while rows := bf.next_batch(repo.engine, after, batch, NOT_LIVE_VALUES):
            skipped += [r.id for r in rows if not _backfill_one(repo, r, now, report)]
            after = (rows[-1].created_at, rows[-1].id)
            bf.save_mark(repo.engine, bf.REALM_IDS, bf.Mark(after, False, tuple(skipped)))
    else:
        again = bf.rows_by_id(repo.engine, skipped, NOT_LIVE_VALUES)
        skipped = [r.id for r in again if not _backfill_one(repo, r, now, report)]
    if skipped:
        bf.save_mark(repo.engine, bf.REALM_IDS, bf.Mark(None, True, tuple(skipped)))
        log.warning("realm backfill: %d attempt(s) skipped (no configured key opens them, or their claim "
                    "was contended); they are tried again when an engine opens", len(skipped))
    else:
        bf.finish(repo.engine, bf.REALM_IDS)
        report.done = True
    for c in report.conflicts:
        log.warning("realm backfill: realmId %s of %s is connected by two live attempts: %s holds the claim, "
                    "%s does too; keep one and disconnect the other", c.realm_id, c.element_key, c.holder,
                    c.attempt_id)
    return report


def _backfill_one(repo: Repository, row: bf.SealedRow, now: Callable[[], datetime],
                  report: BackfillReport) -> bool:
    """One attempt; False when it must be tried again later (unreadable, or its claim contended)."""
    report.visited += 1
    try:
        secrets = repo.codec.open(row.secrets) if row.secrets else {}
        callback = repo.codec.open(row.callback_secrets) if row.callback_secrets else None
    except Exception:  # noqa: BLE001 - the codec raises its own error type; any failure is "unreadable"
        report.unreadable += 1
        log.error("realm backfill: attempt %s: no configured key opens its secrets; skipped", row.id)
        return False
    realm = stored_realm(secrets, callback)
    if realm is None:
        report.no_realm += 1
        return True
    if row.has_instance:
        try:
            holder = repo.claim_realm(row.element_key, realm, row.id, replaces=None, not_live=NOT_LIVE_VALUES,
                                      now=now())
        except RealmClaimContendedError:
            return False
        if holder is not None:
            report.conflicts.append(RealmConflict(row.element_key, realm, holder, row.id))
        report.claimed += holder is None
    else:  # a quick start: its step claims the realm before it creates the instance
        report.recorded += row.flow == Flow.QUICK.value
    bf.set_realm(repo.engine, row.id, realm)
    return True

"""One guarded change of an attempt row, as data, so several can be committed together (issue 6/6).

A ``Write`` is either a transition (the row moves to ``entry.dest`` and ``entry`` becomes its
history row) or a reschedule (no transition: a durable retry, a wait, or progress). The repository
commits writes through ONE API: ``Repository.apply(write)`` for one, ``Repository.apply_many``
for a group in one transaction (the worker's group commit). A worker that runs two steps of one
attempt under one lease (``StepRunner.prepare``) commits them as one ``chained`` write carrying
both history rows.

Writes carry secrets in plain text (``secret_updates``, merged into the attempt's secrets, and
``callback_secrets``): the repository seals them when it applies the write, so code above
persistence never handles ciphertext or a codec.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from states.attempt import MUTABLE_COLUMNS, Attempt, HistoryEntry
from states.model import State


@dataclass(frozen=True)
class NewCallback:
    """A callbacks-inbox row to insert together with a transition (or alone); ``params`` in plain text."""

    attempt_id: str | None
    received_at: datetime
    params: dict[str, Any] | None
    digest: str | None
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class Write:
    """A compare-and-set UPDATE of ``attempt`` (guarded by version, state and lease ``owner``).

    ``values`` maps plain columns to their new values; ``secret_updates`` (plain) are merged into
    ``attempt.secrets`` and stored sealed; ``callback_secrets`` (an applied callback's parameters)
    are stored sealed in their own column. ``entries`` are the history rows of the transitions it
    applies, in order (none for a reschedule, two for a chained write); ``count_failure`` adds one
    to ``failures``. ``callback`` is an inbox row inserted with the transition and
    ``callback_updates`` settle inbox rows (``(id, status, reason)``) in the same transaction.
    """

    attempt: Attempt
    owner: str | None
    values: dict[str, Any]
    entries: tuple[HistoryEntry, ...] = ()
    count_failure: bool = False
    secret_updates: dict[str, Any] | None = None
    callback_secrets: dict[str, Any] | None = None
    callback: NewCallback | None = None
    callback_updates: tuple[tuple[int, str, str | None], ...] = ()

    @property
    def columns(self) -> frozenset[str]:
        """Every column the UPDATE sets (the sealed ones included)."""
        sealed = {"secrets"} if self.secret_updates is not None else set()
        if self.callback_secrets is not None:
            sealed.add("callback_secrets")
        return frozenset(self.values) | sealed

    @property
    def statement_key(self) -> tuple[frozenset[str], bool, bool]:
        """Writes with equal keys run the same prepared UPDATE (``statements.guarded_update``)."""
        return self.columns, self.owner is not None, self.count_failure

    def merged_secrets(self) -> dict[str, Any]:
        """The attempt's secrets as this write leaves them (plain)."""
        if self.secret_updates is None:
            return self.attempt.secrets
        return {**self.attempt.secrets, **self.secret_updates}


def _released(attempt: Attempt, changes: Mapping[str, Any] | None, *, now: datetime,
              next_run_at: datetime | None) -> dict[str, Any]:
    """The columns every write sets: the decision's ``changes`` (checked), the next version, the
    released lease and when it is due next."""
    bad = set(changes or ()) - MUTABLE_COLUMNS
    if bad:
        raise ValueError(f"decision may not set {sorted(bad)}")
    values = dict(changes or {})
    values.update(version=attempt.version + 1, updated_at=now, next_run_at=next_run_at, lease_owner=None,
                  lease_expires_at=None)
    return values


def transition_write(
    attempt: Attempt,
    entry: HistoryEntry,
    *,
    owner: str | None,
    now: datetime,
    next_run_at: datetime | None,
    changes: Mapping[str, Any] | None = None,
    secret_updates: dict[str, Any] | None = None,
    failure_reason: str | None = None,
    last_error: dict[str, Any] | None = None,
    callback_secrets: dict[str, Any] | None = None,
    callback: NewCallback | None = None,
    callback_updates: tuple[tuple[int, str, str | None], ...] = (),
) -> Write:
    """The ``Write`` that moves ``attempt`` along ``entry`` and releases its lease.

    ``owner`` is the lease holder (None for callers that hold no lease, such as callbacks and
    operator actions, guarded by version alone).
    """
    values = _released(attempt, changes, now=now, next_run_at=next_run_at)
    values.update(state=entry.dest, history_seq=entry.seq, runs=0, failures=0, failure_reason=failure_reason,
                  last_error=last_error, renewal_failing_since=None)
    return Write(attempt, owner, values, (entry,), secret_updates=secret_updates,
                 callback_secrets=callback_secrets, callback=callback, callback_updates=callback_updates)


def reschedule_write(
    attempt: Attempt,
    *,
    owner: str | None,
    now: datetime,
    next_run_at: datetime | None,
    error: dict[str, Any] | None,
    count_failure: bool,
    changes: Mapping[str, Any] | None = None,
    secret_updates: dict[str, Any] | None = None,
) -> Write:
    """The ``Write`` that releases the lease without a transition, due again at ``next_run_at``."""
    values = _released(attempt, changes, now=now, next_run_at=next_run_at)
    if count_failure:
        values["last_error"] = error  # and failures = failures + 1, in the statement
    elif secret_updates is not None or changes:
        values["failures"] = 0  # progress was made: the next failure starts a new count
    return Write(attempt, owner, values, (), count_failure, secret_updates=secret_updates)


_HELD = frozenset({"lease_owner", "lease_expires_at"})


def applied(write: Write) -> Attempt:
    """The attempt as it will read once ``write`` commits, still leased: its next step may run now.

    ``runs`` is 1, as after a claim: the next step runs for the first time under this lease.
    """
    values = {k: v for k, v in write.values.items() if k not in _HELD}
    if "state" in values:
        values["state"] = State(values["state"])
    values.update(runs=1, secrets=write.merged_secrets())
    return replace(write.attempt, **values)


def chained(first: Write, second: Write) -> Write:
    """``first`` and then ``second`` (a write of ``applied(first)``) as ONE guarded write.

    Guarded like ``first``, which is what the database holds; sets every column either sets,
    ``second`` winning; records the history rows of both; the secret updates of both are merged
    into ``first.attempt``'s secrets.
    """
    values = {**first.values, **second.values}
    if not second.entries:
        values["runs"] = second.attempt.runs  # the second step ran without a transition
    if second.count_failure:
        values["failures"] = second.attempt.failures + 1  # first reset the count; the statement cannot add
    updates = None
    if first.secret_updates is not None or second.secret_updates is not None:
        updates = {**(first.secret_updates or {}), **(second.secret_updates or {})}
    return Write(first.attempt, first.owner, values, first.entries + second.entries,
                 secret_updates=updates,
                 callback_secrets=second.callback_secrets if second.callback_secrets is not None
                 else first.callback_secrets)

"""One guarded change of an attempt row, as data, so several can be committed together (issue 6/6).

A ``Write`` is either a transition (the row moves to ``entry.dest`` and ``entry`` becomes its
history row) or a reschedule (no transition: a durable retry, a wait, or progress). The repository
commits one ``Write`` on its own (``commit_transition`` / ``reschedule``) or a group of them in one
transaction (``Repository.commit_group``): the worker's group commit, which turns one commit per
step into one commit per group of steps. A worker that runs two steps of one attempt under one
lease (``runner.prepare_step``) commits them as one ``chained`` write carrying both history rows.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from states.attempt import MUTABLE_COLUMNS, Attempt, HistoryEntry
from states.model import State


@dataclass(frozen=True)
class Write:
    """A compare-and-set UPDATE of ``attempt`` (guarded by version, state and lease ``owner``).

    ``values`` maps columns to their new values (a secrets blob already sealed); ``entries`` are
    the history rows of the transitions it applies, in order (none for a reschedule, two for a
    chained write); ``count_failure`` adds one to ``failures``.
    """

    attempt: Attempt
    owner: str | None
    values: dict[str, Any]
    entries: tuple[HistoryEntry, ...] = ()
    count_failure: bool = False

    @property
    def statement_key(self) -> tuple[frozenset[str], bool, bool]:
        """Writes with equal keys run the same prepared UPDATE (``statements.guarded_update``)."""
        return frozenset(self.values), self.owner is not None, self.count_failure


def _released(attempt: Attempt, changes: Mapping[str, Any] | None, *, now: datetime,
              next_run_at: datetime | None, sealed_secrets: bytes | None) -> dict[str, Any]:
    """The columns every write sets: the decision's ``changes`` (checked), the next version, the
    released lease, when it is due next and, if given, the newly sealed secrets."""
    bad = set(changes or ()) - MUTABLE_COLUMNS
    if bad:
        raise ValueError(f"decision may not set {sorted(bad)}")
    values = dict(changes or {})
    values.update(version=attempt.version + 1, updated_at=now, next_run_at=next_run_at, lease_owner=None,
                  lease_expires_at=None)
    if sealed_secrets is not None:
        values["secrets"] = sealed_secrets
    return values


def transition_write(
    attempt: Attempt,
    entry: HistoryEntry,
    *,
    owner: str | None,
    now: datetime,
    next_run_at: datetime | None,
    changes: Mapping[str, Any] | None = None,
    sealed_secrets: bytes | None = None,
    failure_reason: str | None = None,
    last_error: dict[str, Any] | None = None,
    sealed_callback: bytes | None = None,
) -> Write:
    """The ``Write`` that moves ``attempt`` along ``entry`` and releases its lease.

    ``sealed_callback`` (an applied callback's encrypted parameters) goes to ``callback_secrets``.
    """
    values = _released(attempt, changes, now=now, next_run_at=next_run_at, sealed_secrets=sealed_secrets)
    values.update(state=entry.dest, history_seq=entry.seq, runs=0, failures=0, failure_reason=failure_reason,
                  last_error=last_error)
    if sealed_callback is not None:
        values["callback_secrets"] = sealed_callback
    return Write(attempt, owner, values, (entry,))


def reschedule_write(
    attempt: Attempt,
    *,
    owner: str | None,
    now: datetime,
    next_run_at: datetime | None,
    error: dict[str, Any] | None,
    count_failure: bool,
    changes: Mapping[str, Any] | None = None,
    sealed_secrets: bytes | None = None,
) -> Write:
    """The ``Write`` that releases the lease without a transition, due again at ``next_run_at``."""
    values = _released(attempt, changes, now=now, next_run_at=next_run_at, sealed_secrets=sealed_secrets)
    if count_failure:
        values["last_error"] = error  # and failures = failures + 1, in the statement
    elif sealed_secrets is not None or changes:
        values["failures"] = 0  # progress was made: the next failure starts a new count
    return Write(attempt, owner, values, (), count_failure)


_HELD = frozenset({"secrets", "lease_owner", "lease_expires_at"})


def applied(write: Write, secrets: dict[str, Any]) -> Attempt:
    """The attempt as it will read once ``write`` commits, still leased: its next step may run now.

    ``secrets`` is the merged, unsealed secrets dict. ``runs`` is 1, as after a claim: the next
    step runs for the first time under this lease.
    """
    values = {k: v for k, v in write.values.items() if k not in _HELD}
    if "state" in values:
        values["state"] = State(values["state"])
    values.update(runs=1, secrets=secrets)
    return replace(write.attempt, **values)


def chained(first: Write, second: Write, *, sealed_secrets: bytes | None) -> Write:
    """``first`` and then ``second`` (a write of ``applied(first)``) as ONE guarded write.

    Guarded like ``first``, which is what the database holds; sets every column either sets,
    ``second`` winning; records the history rows of both. ``first`` is built without sealing its
    secrets (they travel in the in-memory attempt), so ``sealed_secrets`` (the attempt's merged
    secrets) is stored when ``second`` seals none.
    """
    values = {**first.values, **second.values}
    if "secrets" not in second.values and sealed_secrets is not None:
        values["secrets"] = sealed_secrets
    if not second.entries:
        values["runs"] = second.attempt.runs  # the second step ran without a transition
    if second.count_failure:
        values["failures"] = second.attempt.failures + 1  # first reset the count; the statement cannot add
    return Write(first.attempt, first.owner, values, first.entries + second.entries)

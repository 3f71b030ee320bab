"""The in-memory view of one provisioning attempt, as handlers and callers see it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from states.model import DEFAULT_RENEWAL_OWNER, Flow, RenewalOwner, State

# Columns of ``attempts`` a decision may set through ``Advance.changes`` (the rest belong to the engine).
MUTABLE_COLUMNS: frozenset[str] = frozenset(
    {
        "deadline_at",
        "state_nonce_hash",
        "request_token_hash",
        "instance_id",
        "refresh_interval_s",
        "refresh_time",
        "next_renewal_at",
        "renewals",
        "health",
        "health_reason",
        "last_check_at",
        "renewal_failing_since",
        "realm_id",
        "connect_token_hash",
    }
)


@dataclass
class Attempt:
    """One row of ``attempts`` with its secrets decrypted (``secrets``); never logged whole."""

    id: str
    element_key: str
    flow: Flow
    name: str
    state: State
    version: int
    created_at: datetime
    updated_at: datetime
    tags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    history_seq: int = 0
    runs: int = 0
    next_run_at: datetime | None = None
    deadline_at: datetime | None = None
    callback_wait_s: int | None = None
    failures: int = 0
    last_error: dict[str, Any] | None = None
    failure_reason: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    state_nonce_hash: str | None = None
    request_token_hash: str | None = None
    instance_id: str | None = None
    refresh_interval_s: int | None = None
    refresh_time: int | None = None
    next_renewal_at: datetime | None = None
    renewals: int = 0
    customer: str | None = None
    last_check_at: datetime | None = None
    health: str | None = None  # "healthy" | "unhealthy" after a check (states.health)
    health_reason: str | None = None
    connect_token_hash: str | None = None
    replaces: str | None = None  # the attempt this one replaces once PROVISIONED (engine.core.guard)
    renewal_owner: str | None = None  # "engine" | "platform" (states.model.RenewalOwner)
    renewal_failing_since: datetime | None = None  # first failure of the current renewal
    realm_id: str | None = None  # the provider account (QuickBooks company) the callback named
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def instance_tag(self) -> str:
        """The tag that marks this attempt's instance, so a repeated create step can adopt it."""
        return f"provision-attempt-{self.id}"

    @property
    def owner(self) -> RenewalOwner:
        """Who renews the tokens: the stored owner, else the flow's default (rows before 0007)."""
        if self.renewal_owner:
            return RenewalOwner(self.renewal_owner)
        return DEFAULT_RENEWAL_OWNER[self.flow]

    @property
    def config(self) -> dict[str, str]:
        """The element configuration given at start (stored encrypted: it holds api secrets)."""
        cfg = self.secrets.get("config", {})
        return dict(cfg) if isinstance(cfg, dict) else {}

    def __repr__(self) -> str:  # debug-friendly and secret-free (STYLE habit 15)
        return (
            f"<Attempt {self.id} {self.element_key}/{self.flow} {self.state} v{self.version}"
            f" failures={self.failures} next_run_at={self.next_run_at}>"
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One applied transition (a ``history`` row); never updated or deleted.

    ``tries`` is how hard the step was: the failed runs of this step before (durable retries)
    plus the HTTP tries of the run that committed. ``error`` is the error that ended the
    attempt (fail rows) or the last error before a retried step finally succeeded.
    """

    attempt_id: str
    seq: int
    trigger: str
    source: str
    dest: str
    at: datetime
    duration_ms: int | None = None
    worker: str | None = None
    outcome: str = "ok"
    tries: int = 1
    error: dict[str, Any] | None = None
    note: str | None = None

    @classmethod
    def after(cls, attempt: Attempt, trigger: str, dest: State, at: datetime, *, worker: str | None,
              outcome: str = "ok", tries: int = 1, duration_ms: int | None = 0,
              error: dict[str, Any] | None = None, note: str | None = None) -> HistoryEntry:
        """The history row of ``attempt``'s next transition, ``trigger`` to ``dest``."""
        return cls(attempt.id, attempt.history_seq + 1, trigger, attempt.state.value, dest.value, at,
                   duration_ms, worker, outcome, tries, error, note)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (timestamps as ISO-8601)."""
        return {
            "seq": self.seq,
            "trigger": self.trigger,
            "source": self.source,
            "dest": self.dest,
            "at": self.at.isoformat(),
            "duration_ms": self.duration_ms,
            "worker": self.worker,
            "outcome": self.outcome,
            "tries": self.tries,
            "error": self.error,
            "note": self.note,
        }

"""The worker's tunables: ``EngineSettings`` from ``PROVISION_*`` variables (lease, batch, poll...)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.config.bounds import numbers_from_env
from engine.config.checks import PRINTABLE_RE, check_url
from engine.config.environment import environment
from engine.errors import InvalidInputError

_SETTINGS_ENV = {
    "lease_s": "PROVISION_LEASE_SECONDS",
    "batch_size": "PROVISION_BATCH_SIZE",
    "poll_max_s": "PROVISION_POLL_SECONDS",
    "callback_wait_s": "PROVISION_CALLBACK_WAIT_SECONDS",
    "renewal_max_lead_s": "PROVISION_RENEWAL_MAX_LEAD_SECONDS",
    "commit_window_s": "PROVISION_COMMIT_WINDOW_SECONDS",
    "create_settle_s": "PROVISION_CREATE_SETTLE_SECONDS",
    "transaction_idle_s": "PROVISION_DB_TRANSACTION_IDLE_SECONDS",
}


@dataclass(frozen=True)
class EngineSettings:
    """Worker tunables."""

    lease_s: float = 120.0  # longer than one step with its in-process retries
    batch_size: int = 50  # attempts claimed per tick
    concurrency: int = 1  # steps in flight per tick
    poll_max_s: float = 5.0  # the worker's longest wait between ticks (callbacks may arrive)
    callback_wait_s: int = 1800
    renewal_max_lead_s: int = 15 * 60  # lead = min(this, 10% of the refresh interval)
    # Group commit: step results finished within this many seconds of the first uncommitted one
    # are written in one transaction; 0 commits every step on its own.
    commit_window_s: float = 0.2
    # The public address of `provision serve` (PROVISION_PUBLIC_URL): connect links start with it.
    public_url: str | None = None
    # After an ambiguous POST /instances (a read timeout, a connection reset after sending), no
    # second POST goes out until a tag look-up made this long after the first finds nothing.
    # None: 3x the client's read timeout, at least 5 s (the platform may still commit meanwhile).
    create_settle_s: float | None = None
    # Where a rotated token goes when the database refuses it (engine.core.spool); None: beside
    # the SQLite file, or ./.provision-spool for PostgreSQL (PROVISION_SPOOL_DIR).
    spool_dir: str | None = None
    # PostgreSQL: a session idle this long inside a transaction (a stopped or hung worker), or a
    # statement waiting this long for a row lock, is ended by the server, so that a frozen worker
    # cannot keep its attempts from being taken over after its lease. None: half the lease (at least 1 s); 0:
    # the server's own settings (for a pooler such as PgBouncer that refuses the ``options`` parameter).
    transaction_idle_s: float | None = None

    @property
    def db_transaction_idle_s(self) -> float | None:
        """``transaction_idle_s``, None when 0 (see ``pg_session_options``); when unset, half the
        lease but at least 1 s (an honest transaction on a busy machine may pause that long)."""
        if self.transaction_idle_s is None:
            return min(self.lease_s, max(1.0, self.lease_s / 2))
        return self.transaction_idle_s or None

    def __post_init__(self) -> None:
        if self.public_url is not None:
            check_url("EngineSettings.public_url", self.public_url)
        # Embedders build these directly: nan or a string would otherwise fail every tick (issue 16).
        settle = self.create_settle_s
        if settle is not None and (isinstance(settle, bool) or not isinstance(settle, (int, float))
                                   or not (math.isfinite(settle) and settle >= 1)):
            raise InvalidInputError("EngineSettings.create_settle_s", f"must be a finite number of seconds "
                                    f"of at least 1 (or None), got {str(settle)[:40]!r}")
        for name in ("lease_s", "batch_size", "concurrency", "poll_max_s", "callback_wait_s",
                     "renewal_max_lead_s", "commit_window_s"):
            value = getattr(self, name)
            whole = name in ("batch_size", "concurrency", "callback_wait_s", "renewal_max_lead_s")
            ok = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool)
            least = 0 if name == "commit_window_s" else (1 if whole else 0.001)
            if not (ok and math.isfinite(value) and value >= least):
                kind = "a whole number" if whole else "a finite number of seconds"
                raise InvalidInputError(f"EngineSettings.{name}", f"must be {kind} of at least {least:g}, "
                                        f"got {str(value)[:40]!r}")
        idle = self.transaction_idle_s
        if idle is not None and (isinstance(idle, bool) or not isinstance(idle, (int, float))
                                 or not (math.isfinite(idle) and 0 <= idle <= self.lease_s)):
            # Longer than the lease, a frozen worker would hold its rows after another took them over.
            raise InvalidInputError("EngineSettings.transaction_idle_s",
                                    f"must be a finite number of seconds from 0 to the lease "
                                    f"({self.lease_s:g} s), got {str(idle)[:40]!r}",
                                    hint="set PROVISION_DB_TRANSACTION_IDLE_SECONDS at most "
                                         "PROVISION_LEASE_SECONDS, or leave it unset (half the lease)")


def engine_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> EngineSettings:
    """``EngineSettings`` from ``PROVISION_*`` variables, plus overrides.

    The variables set the lease, batch, poll, callback wait, commit window and create settle time
    (ranges: ``BOUNDS``).
    """
    values: dict[str, Any] = dict(numbers_from_env(environ, _SETTINGS_ENV))
    public = environment(environ).get("PROVISION_PUBLIC_URL", "").strip()
    if public:
        values["public_url"] = check_url("PROVISION_PUBLIC_URL", public)
    spool_dir = environment(environ).get("PROVISION_SPOOL_DIR")
    if spool_dir:
        if len(spool_dir) > 1024 or not PRINTABLE_RE.fullmatch(spool_dir):
            raise InvalidInputError("PROVISION_SPOOL_DIR", "must be a directory path of printable characters "
                                                           "(at most 1024)")
        values["spool_dir"] = spool_dir
    values.update({k: v for k, v in overrides.items() if v is not None})
    idle, lease = values.get("transaction_idle_s"), values.get("lease_s", EngineSettings.lease_s)
    if idle is not None and idle > lease:
        raise InvalidInputError("PROVISION_DB_TRANSACTION_IDLE_SECONDS",
                                f"must be at most the lease (PROVISION_LEASE_SECONDS, {lease:g}), "
                                f"got {idle:g}",
                                hint="leave it unset for half the lease")
    return EngineSettings(**values)

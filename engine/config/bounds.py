"""The range of every numeric environment variable (``BOUNDS``) and the parser that enforces it.

The README's environment list prints the same ranges; ``tests/unit/test_env_parsing.py`` checks
that every numeric variable read by ``engine.config`` has one.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.config.environment import environment
from engine.errors import InvalidInputError


@dataclass(frozen=True)
class Bound:
    """The sane range of one numeric variable (the README's environment list prints the same)."""

    kind: type[int] | type[float]
    minimum: float
    maximum: float
    note: str = ""  # the maximum in words, e.g. "1 day"

    def rule(self) -> str:
        """The rule in words, as error messages print it."""
        what = "a whole number" if self.kind is int else "a finite number of seconds"
        note = f" ({self.note})" if self.note else ""
        return f"{what} from {_plain(self.minimum)} to {_plain(self.maximum)}{note}"

    def parse(self, var: str, raw: str) -> int | float:
        """``raw`` as a number in range, or ``InvalidInputError`` naming ``var``, the rule and the value."""
        text = raw.strip()
        pattern = _INT_RE if self.kind is int else _FLOAT_RE
        # The regexes keep out nan, inf, '1_0', non-ASCII digits and 5,000-digit numbers.
        value: float = self.kind(text) if len(text) <= 40 and pattern.fullmatch(text) else math.nan
        if not (math.isfinite(value) and self.minimum <= value <= self.maximum):
            raise InvalidInputError(var, f"must be {self.rule()}, got {raw[:40]!r}")
        return value


def _plain(number: float) -> str:
    """``2592000`` rather than ``2.592e+06``: the README prints the same text."""
    return str(int(number)) if float(number).is_integer() else str(number)


_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DAY = 86400.0
#: Every numeric variable and its range: wide enough for any real deployment, narrow enough that a
#: typo (or nan, inf, 1e300) is refused at start-up instead of failing every tick (issue 16).
BOUNDS: dict[str, Bound] = {
    "PROVISION_LEASE_SECONDS": Bound(float, 1, _DAY, "1 day"),
    "PROVISION_BATCH_SIZE": Bound(int, 1, 10_000),
    "PROVISION_POLL_SECONDS": Bound(float, 0.01, 3600, "1 hour"),
    "PROVISION_CALLBACK_WAIT_SECONDS": Bound(int, 1, 30 * _DAY, "30 days"),
    "PROVISION_RENEWAL_MAX_LEAD_SECONDS": Bound(int, 1, 7 * _DAY, "7 days"),
    "PROVISION_CREATE_SETTLE_SECONDS": Bound(float, 1, _DAY, "1 day"),
    "PROVISION_DB_TRANSACTION_IDLE_SECONDS": Bound(float, 0, _DAY, "1 day, at most the lease; 0: off"),
    "PROVISION_COMMIT_WINDOW_SECONDS": Bound(float, 0, 60, "1 minute; 0 turns group commit off"),
    "PROVISION_CONNECT_TIMEOUT_SECONDS": Bound(float, 0.1, 300, "5 minutes"),
    "PROVISION_READ_TIMEOUT_SECONDS": Bound(float, 0.1, 3600, "1 hour"),
    "PROVISION_RETRY_IN_PROCESS_ATTEMPTS": Bound(int, 1, 10),
    "PROVISION_RETRY_DURABLE_INITIAL_SECONDS": Bound(float, 0.1, _DAY, "1 day"),
    "PROVISION_RETRY_DURABLE_MAX_SECONDS": Bound(float, 0.1, 7 * _DAY, "7 days"),
    "PROVISION_RETRY_BUDGET": Bound(int, 0, 1000),
    "PROVISION_WEBHOOK_TIMEOUT_SECONDS": Bound(float, 0.1, 300, "5 minutes"),
    "PROVISION_SERVE_THREADS": Bound(int, 1, 256),
    "PROVISION_SERVE_CONNECTION_LIMIT": Bound(int, 10, 100_000),
    "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS": Bound(float, 1, 3600, "1 hour"),
    "PROVISION_SERVE_REFUSED_BURST": Bound(int, 1, 100_000),
    "PROVISION_SERVE_REFUSED_PER_MINUTE": Bound(int, 1, 100_000),
    "PROVISION_WORKER_METRICS_PORT": Bound(int, 1, 65535),
    "PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS": Bound(float, 0.01, 3600, "1 hour"),
    "PROVISION_DB_POOL_SIZE": Bound(int, 1, 1000),
}


def numbers_from_env(environ: Mapping[str, str] | None, fields: Mapping[str, str]) -> dict[str, Any]:
    """Read the variables named in ``fields`` (field -> variable), each checked against ``BOUNDS``.

    An empty variable counts as unset, as in most shells' ``VAR= command``.
    """
    env = environment(environ)
    return {field: BOUNDS[var].parse(var, env[var]) for field, var in fields.items() if env.get(var)}

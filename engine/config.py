"""Settings and where they come from: the ONLY module that reads ``os.environ``.

Every tunable of the engine is a frozen dataclass here (``EngineSettings``, ``ClientSettings``,
``RetryPolicy``, ``RenewalPolicy``), and each ``*_from_env`` function builds one from the
``PROVISION_*`` / ``ELEMENTS_*`` variables. The defaults that the engine shares with the local
simulator (its address, base path and secrets) are repeated here rather than imported, because
``engine`` must not depend on ``sandbox``; ``tests/unit/test_config.py`` checks that they agree.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from engine.errors import InvalidInputError
from persistence.database import DEFAULT_URL

#: The local simulator's address, base path and secrets (``sandbox.defaults`` holds the same values).
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8040
BASE_PATH = "/elements/api-v2"
SANDBOX_USER_SECRET = "sandbox-user-secret"
SANDBOX_ORG_SECRET = "sandbox-org-secret"
#: Text a person typed: no control, line-separator or surrogate characters.
PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
MAX_URL = 2048
#: The environment variable that holds the Fernet key(s), newest first.
ENV_KEY = "PROVISION_SECRET_KEY"


def check_url(field: str, value: str) -> str:
    """An absolute http(s) URL with a host (and a valid port, if any), at most ``MAX_URL`` characters."""
    problem = f"must be an absolute http or https URL, got {str(value)[:100]!r}"
    if not isinstance(value, str) or len(value) > MAX_URL or not PRINTABLE_RE.fullmatch(value):
        raise InvalidInputError(field, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise InvalidInputError(field, problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise InvalidInputError(field, problem)
    return value


@dataclass(frozen=True)
class ClientSettings:
    """Where the platform is and how to talk to it."""

    base_url: str
    user_secret: str
    org_secret: str
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_body_bytes: int = 1_000_000  # hostile or broken servers must not exhaust memory
    # Root of the provider's token endpoints; None means Intuit's real ones (engine.clients.provider).
    provider_root: str | None = None
    # Read once from REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and the proxy variables by
    # client_settings_from_env: requests would re-read them on every call (bench/README.md).
    ca_bundle: str | None = None
    proxies: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never show the secrets
        timeouts = f"({self.connect_timeout}, {self.read_timeout})"
        return f"ClientSettings(base_url={self.base_url!r}, timeouts={timeouts})"


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


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up; one per engine (or per element)."""

    in_process_attempts: int = 3  # tries of one HTTP call inside one step
    in_process_initial: float = 0.2  # seconds; full jitter over an exponential window
    in_process_max: float = 2.0  # cap of one in-process wait (and of an honoured Retry-After)
    durable_initial: float = 5.0  # first durable reschedule, seconds
    durable_multiplier: float = 2.0
    durable_max: float = 600.0
    budget: int = 6  # durable reschedules allowed per step before retries_exhausted

    def __post_init__(self) -> None:
        for name in ("in_process_initial", "in_process_max", "durable_initial", "durable_max"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"RetryPolicy.{name} must be a number >= 0, got {value!r}")
        if self.in_process_attempts < 1 or self.budget < 0:
            raise ValueError("RetryPolicy.in_process_attempts must be >= 1 and budget >= 0")


@dataclass(frozen=True)
class RenewalPolicy:
    """How renewals retry. Our choice (documented in the README): transient failures back off
    from 1 minute, doubling to at most 1 hour, for up to 4 days after the renewal fell due (like
    Nango); an OAuth2 refresh token lives 100 days and an OAuth1 token has 29 days of Reconnect
    window left, so 4 days of trying loses nothing. A first ``invalid_grant`` is retried once after
    ``reject_confirm_s``: a worker whose lease expired mid-renewal may have rotated the token and
    be about to store it; only a second rejection fails the attempt as ``renewal_rejected``.
    """

    initial: float = 60.0
    maximum: float = 3600.0
    give_up_after: float = 4 * 86400.0
    reject_confirm_s: float = 60.0


DEFAULT_BASE_URL = f"http://{SANDBOX_HOST}:{SANDBOX_PORT}{BASE_PATH}"


def db_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``PROVISION_DB_URL`` or the embedded SQLite default."""
    env = os.environ if environ is None else environ
    return env.get("PROVISION_DB_URL") or DEFAULT_URL


def client_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
    """Platform location and secrets from ``ELEMENTS_*`` variables (defaults: the local sandbox)."""
    env = os.environ if environ is None else environ
    base_url = overrides.pop("base_url", None) or env.get("ELEMENTS_BASE_URL") or DEFAULT_BASE_URL
    check_url("ELEMENTS_BASE_URL", base_url)
    for field_name, var in (("connect_timeout", "PROVISION_CONNECT_TIMEOUT_SECONDS"),
                            ("read_timeout", "PROVISION_READ_TIMEOUT_SECONDS")):
        raw = env.get(var)
        if raw and field_name not in overrides:
            try:
                overrides[field_name] = float(raw)
            except ValueError:
                raise InvalidInputError(var, f"must be a number of seconds, got {raw[:30]!r}") from None
            if not overrides[field_name] > 0:
                raise InvalidInputError(var, f"must be greater than 0, got {raw[:30]!r}")
    provider_root = env.get("PROVISION_PROVIDER_URL") or None
    if provider_root is None:
        # The local sandbox serves the provider endpoints beside the platform; anything else is real.
        parts = urlsplit(base_url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.path.rstrip("/").endswith(BASE_PATH):
            provider_root = f"{parts.scheme}://{parts.netloc}/_provider"
    overrides.setdefault("provider_root", provider_root)
    if "ca_bundle" not in overrides:
        overrides["ca_bundle"] = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None
    if "proxies" not in overrides:
        overrides["proxies"] = tuple(sorted(requests.utils.get_environ_proxies(base_url).items()))
    return ClientSettings(
        base_url=base_url,
        user_secret=overrides.pop("user_secret", None)
        or env.get("ELEMENTS_USER_SECRET")
        or SANDBOX_USER_SECRET,
        org_secret=overrides.pop("org_secret", None) or env.get("ELEMENTS_ORG_SECRET") or SANDBOX_ORG_SECRET,
        **overrides,
    )


def _numbers_from_env(
    environ: Mapping[str, str] | None, fields: Mapping[str, str], defaults: Any
) -> dict[str, Any]:
    """Read the variables named in ``fields`` (field -> variable), typed like ``defaults``' fields."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field_name, var in fields.items():
        raw = env.get(var)
        if not raw:
            continue
        kind = type(getattr(defaults, field_name))
        try:
            values[field_name] = kind(raw)
        except ValueError:
            raise InvalidInputError(var, f"must be a {kind.__name__} number, got {raw[:30]!r}") from None
    return values


_SETTINGS_ENV = {
    "lease_s": "PROVISION_LEASE_SECONDS",
    "batch_size": "PROVISION_BATCH_SIZE",
    "poll_max_s": "PROVISION_POLL_SECONDS",
    "callback_wait_s": "PROVISION_CALLBACK_WAIT_SECONDS",
    "renewal_max_lead_s": "PROVISION_RENEWAL_MAX_LEAD_SECONDS",
    "commit_window_s": "PROVISION_COMMIT_WINDOW_SECONDS",
}
_MAY_BE_ZERO = {"commit_window_s"}  # 0 turns group commit off


def engine_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> EngineSettings:
    """``EngineSettings`` from ``PROVISION_*`` variables, plus overrides.

    The variables set the lease, batch, poll, callback wait and commit window.
    """
    values = _numbers_from_env(environ, _SETTINGS_ENV, EngineSettings())
    for field_name, value in values.items():
        if value < 0 or (value == 0 and field_name not in _MAY_BE_ZERO):
            least = "0 or more" if field_name in _MAY_BE_ZERO else "greater than 0"
            raise InvalidInputError(_SETTINGS_ENV[field_name], f"must be {least}, got {value!r}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EngineSettings(**values)


_POLICY_ENV = {
    "in_process_attempts": "PROVISION_RETRY_IN_PROCESS_ATTEMPTS",
    "durable_initial": "PROVISION_RETRY_DURABLE_INITIAL_SECONDS",
    "durable_max": "PROVISION_RETRY_DURABLE_MAX_SECONDS",
    "budget": "PROVISION_RETRY_BUDGET",
}


def retry_policy_from_env(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """``RetryPolicy`` with overrides from ``PROVISION_RETRY_*`` variables."""
    values = _numbers_from_env(environ, _POLICY_ENV, RetryPolicy())
    try:
        return RetryPolicy(**values)
    except ValueError as exc:
        raise InvalidInputError("PROVISION_RETRY_*", str(exc)) from None


#: Days of history kept row by row; older renewal rows become daily summaries (persistence.retention).
RETENTION_ENV = "PROVISION_HISTORY_RETENTION_DAYS"


def history_retention_days_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``PROVISION_HISTORY_RETENTION_DAYS`` as a whole number of days; 0 (or unset) keeps everything."""
    env = os.environ if environ is None else environ
    raw = (env.get(RETENTION_ENV) or "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise InvalidInputError(RETENTION_ENV, f"must be a whole number of days (0 keeps everything), "
                                               f"got {raw[:30]!r}")
    return int(raw)


def secret_keys_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The Fernet key list in ``PROVISION_SECRET_KEY`` (newest first), or None."""
    env = os.environ if environ is None else environ
    return env.get(ENV_KEY) or None


def environ_copy(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: the process environment) to adjust and pass on."""
    return dict(os.environ if environ is None else environ)

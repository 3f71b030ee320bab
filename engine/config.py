"""Settings and where they come from: the ONLY module that reads ``os.environ``.

Every tunable of the engine is a frozen dataclass here (``EngineSettings``, ``ClientSettings``,
``RetryPolicy``, ``RenewalPolicy``), and each ``*_from_env`` function builds one from the
``PROVISION_*`` / ``ELEMENTS_*`` variables. The defaults that the engine shares with the local
simulator (its address, base path and secrets) are repeated here rather than imported, because
``engine`` must not depend on ``sandbox``; ``tests/unit/test_config_defaults.py`` checks that they agree.
"""
from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa

from engine.errors import InvalidInputError
from persistence.database import (
    DEFAULT_POOL_SIZE,
    DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    DEFAULT_URL,
    create_db_engine,
)

#: The local simulator's address, base path and secrets (``sandbox.defaults`` holds the same values).
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8040
BASE_PATH = "/elements/api-v2"
SANDBOX_USER_SECRET = "sandbox-user-secret"
SANDBOX_ORG_SECRET = "sandbox-org-secret"
#: Bidirectional overrides, embeddings, isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E/F,
#: U+061C): they make a name or id display as something else ("Trojan Source"), issue 16 finding 10.
BIDI_CHARS = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: Text a person typed: no control, line-separator, bidi-control or surrogate characters.
PRINTABLE_RE = re.compile(rf"[^\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI_CHARS}\ud800-\udfff]+")
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
        for name in ("in_process_initial", "in_process_max", "durable_initial", "durable_max",
                     "durable_multiplier"):
            value = getattr(self, name)
            # Finite too: an infinite wait overflows the due time and fails every tick (issue 16).
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise InvalidInputError(f"RetryPolicy.{name}", f"must be a finite number >= 0, "
                                        f"got {str(value)[:40]!r}")
        for name, least in (("in_process_attempts", 1), ("budget", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInputError(f"RetryPolicy.{name}", f"must be a whole number >= {least}, "
                                        f"got {str(value)[:40]!r}")


@dataclass(frozen=True)
class RenewalPolicy:
    """How renewals retry. Our choice (documented in the README): transient failures back off
    from 1 minute, doubling to at most 1 hour, for up to 4 days after this renewal first failed (like
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


@dataclass(frozen=True)
class DatabaseSettings:
    """How the engine's database connections behave (read before the database is opened)."""

    # SQLite: how long to wait for another process's write lock (PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS).
    sqlite_busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S
    # PostgreSQL: connections each engine keeps in its pool (PROVISION_DB_POOL_SIZE).
    pool_size: int = DEFAULT_POOL_SIZE


def database_settings_from_env(environ: Mapping[str, str] | None = None) -> DatabaseSettings:
    """``DatabaseSettings`` from ``PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS`` and ``PROVISION_DB_POOL_SIZE``
    (ranges: ``BOUNDS``)."""
    return DatabaseSettings(**_numbers_from_env(environ, _DATABASE_ENV))


def open_database(db_url: str, environ: Mapping[str, str] | None = None, *,
                  transaction_idle_s: float | None = None) -> sa.Engine:
    """A database engine for ``db_url``, or ``InvalidInputError`` naming ``db_url`` with an example URL.

    Messages speak the Python API's words (``db_url``); the CLI renders the field as ``--db``.

    The one place that turns a URL SQLAlchemy cannot use into an input error: ``open_repository``,
    ``rotate_keys`` and ``provision db upgrade`` all open their database through it. ``environ``
    (default: the process environment) gives the ``DatabaseSettings``.
    ``transaction_idle_s``: the PostgreSQL bound on a frozen session (``EngineSettings``).
    """
    settings = database_settings_from_env(environ)
    try:
        return create_db_engine(db_url, sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
                                transaction_idle_s=transaction_idle_s, pool_size=settings.pool_size)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types for bad URLs
        # A PostgreSQL URL without its driver: name the extra that brings it (issue 18 item 5).
        missing_driver = isinstance(exc, ModuleNotFoundError) and "psycopg" in str(exc)
        # SQLAlchemy's messages do not quote the URL, so a password in it is not repeated here.
        raise InvalidInputError(
            "db_url",
            f"cannot use database URL ({type(exc).__name__}: {str(exc)[:120]})",
            hint="install the [postgres] extra: pip install 'element-provisioner[postgres]' "
                 "(or '.[postgres]' from a checkout)" if missing_driver else
                 "e.g. sqlite:///provision.db or postgresql+psycopg://user@host/db",
        ) from None


def client_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
    """Platform location and secrets from ``ELEMENTS_*`` variables (defaults: the local sandbox)."""
    env = os.environ if environ is None else environ
    base_url = overrides.pop("base_url", None) or env.get("ELEMENTS_BASE_URL") or DEFAULT_BASE_URL
    check_url("ELEMENTS_BASE_URL", base_url)
    for field_name, value in _numbers_from_env(env, _CLIENT_ENV).items():
        overrides.setdefault(field_name, value)
    provider_root = env.get("PROVISION_PROVIDER_URL") or None
    if provider_root is not None:
        check_url("PROVISION_PROVIDER_URL", provider_root)
    else:
        # The local sandbox serves the provider endpoints beside the platform; anything else is real.
        parts = urlsplit(base_url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.path.rstrip("/").endswith(BASE_PATH):
            provider_root = f"{parts.scheme}://{parts.netloc}/_provider"
    overrides.setdefault("provider_root", provider_root)
    if "ca_bundle" not in overrides:
        overrides["ca_bundle"] = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None
    if "proxies" not in overrides:
        overrides["proxies"] = tuple(sorted(requests.utils.get_environ_proxies(base_url).items()))
    secrets: dict[str, Any] = {}
    for field, var, default in (("user_secret", "ELEMENTS_USER_SECRET", SANDBOX_USER_SECRET),
                                ("org_secret", "ELEMENTS_ORG_SECRET", SANDBOX_ORG_SECRET)):
        value = overrides.pop(field, None) or env.get(var) or default
        # It goes into an HTTP header on every call; never echoed, it is a secret.
        if not isinstance(value, str) or len(value) > 1024 or not PRINTABLE_RE.fullmatch(value):
            raise InvalidInputError(var, "must be 1 to 1024 printable characters (no control or bidi "
                                    "characters); the value is not shown")
        secrets[field] = value
    return ClientSettings(base_url=base_url, **secrets, **overrides)


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


def _numbers_from_env(environ: Mapping[str, str] | None, fields: Mapping[str, str]) -> dict[str, Any]:
    """Read the variables named in ``fields`` (field -> variable), each checked against ``BOUNDS``.

    An empty variable counts as unset, as in most shells' ``VAR= command``.
    """
    env = os.environ if environ is None else environ
    return {field: BOUNDS[var].parse(var, env[var]) for field, var in fields.items() if env.get(var)}


_DATABASE_ENV = {"sqlite_busy_timeout_s": "PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS",
                 "pool_size": "PROVISION_DB_POOL_SIZE"}
_CLIENT_ENV = {
    "connect_timeout": "PROVISION_CONNECT_TIMEOUT_SECONDS",
    "read_timeout": "PROVISION_READ_TIMEOUT_SECONDS",
}
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


def engine_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> EngineSettings:
    """``EngineSettings`` from ``PROVISION_*`` variables, plus overrides.

    The variables set the lease, batch, poll, callback wait, commit window and create settle time
    (ranges: ``BOUNDS``).
    """
    values: dict[str, Any] = dict(_numbers_from_env(environ, _SETTINGS_ENV))
    public = (os.environ if environ is None else environ).get("PROVISION_PUBLIC_URL", "").strip()
    if public:
        values["public_url"] = check_url("PROVISION_PUBLIC_URL", public)
    spool_dir = (os.environ if environ is None else environ).get("PROVISION_SPOOL_DIR")
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


_POLICY_ENV = {
    "in_process_attempts": "PROVISION_RETRY_IN_PROCESS_ATTEMPTS",
    "durable_initial": "PROVISION_RETRY_DURABLE_INITIAL_SECONDS",
    "durable_max": "PROVISION_RETRY_DURABLE_MAX_SECONDS",
    "budget": "PROVISION_RETRY_BUDGET",
}


def retry_policy_from_env(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """``RetryPolicy`` with overrides from ``PROVISION_RETRY_*`` variables (ranges: ``BOUNDS``)."""
    values = _numbers_from_env(environ, _POLICY_ENV)
    policy = RetryPolicy(**values)
    if policy.durable_max < policy.durable_initial:
        raise InvalidInputError(
            "PROVISION_RETRY_DURABLE_MAX_SECONDS",
            f"must be at least PROVISION_RETRY_DURABLE_INITIAL_SECONDS ({policy.durable_initial:g}), "
            f"got {policy.durable_max:g}")
    return policy



# --- webhooks (issue 10/12: events) -----------------------------------------------------------------

#: Standard Webhooks secrets: ``whsec_`` and the base64 of 24 to 64 random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookSettings:
    """Where the worker sends signed events and how hard it tries (``engine.core.delivery``).

    Transient failures (no answer, 408, 429, 5xx) are retried ``max_tries`` times in all, waiting
    ``backoff_initial`` seconds doubling to ``backoff_max`` (a longer Retry-After wins, up to
    ``retry_after_max``); then, or at once for any other answer, the event is dead-lettered.
    """

    url: str
    secret: str
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_tries: int = 8
    backoff_initial: float = 10.0
    backoff_max: float = 3600.0
    retry_after_max: float = 86400.0
    batch_size: int = 20  # events claimed per pass

    def __post_init__(self) -> None:
        check_url("PROVISION_WEBHOOK_URL", self.url)
        check_webhook_secret("PROVISION_WEBHOOK_SECRET", self.secret)
        if self.max_tries < 1 or not self.connect_timeout > 0 or not self.read_timeout > 0:
            raise InvalidInputError("WebhookSettings", "max_tries must be >= 1 and timeouts > 0")

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookSettings(url={self.url!r}, max_tries={self.max_tries})"


def check_webhook_secret(field: str, value: str) -> str:
    """A ``whsec_...`` secret whose rest is the base64 of 24 to 64 bytes (Standard Webhooks)."""
    problem = ("must be 'whsec_' followed by the base64 of 24 to 64 random bytes (e.g. "
               "python -c \"import base64,os; print('whsec_'+base64.b64encode(os.urandom(32)).decode())\")")
    if not isinstance(value, str) or not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise InvalidInputError(field, problem)
    try:
        raw = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(field, problem) from None
    if not 24 <= len(raw) <= 64:
        raise InvalidInputError(field, problem)
    return value


def webhook_settings_from_env(environ: Mapping[str, str] | None = None) -> WebhookSettings | None:
    """``PROVISION_WEBHOOK_URL`` and ``PROVISION_WEBHOOK_SECRET`` (both or neither), or None."""
    env = os.environ if environ is None else environ
    url, secret = env.get("PROVISION_WEBHOOK_URL") or None, env.get("PROVISION_WEBHOOK_SECRET") or None
    if url is None and secret is None:
        return None
    if url is None or secret is None:
        missing = "PROVISION_WEBHOOK_URL" if url is None else "PROVISION_WEBHOOK_SECRET"
        raise InvalidInputError(missing, "must be set too: webhooks need both a URL and a secret")
    timeout = env.get("PROVISION_WEBHOOK_TIMEOUT_SECONDS")
    seconds = (BOUNDS["PROVISION_WEBHOOK_TIMEOUT_SECONDS"].parse("PROVISION_WEBHOOK_TIMEOUT_SECONDS", timeout)
               if timeout else WebhookSettings.read_timeout)
    return WebhookSettings(url=url, secret=secret, read_timeout=seconds,
                           connect_timeout=min(seconds, WebhookSettings.connect_timeout))


@dataclass(frozen=True)
class ConsoleSettings:
    """How the operator console authenticates (``provision console``).

    ``token``: a shared bearer secret typed at the login form (the operator also types a name, which
    the history records). ``password_hash``: werkzeug's ``generate_password_hash`` format, for the
    single ``user``. ``session_key``: signs session cookies; a random one per process when unset
    (sessions then end when the console restarts).
    """

    token: str | None = None
    password_hash: str | None = None
    user: str = "operator"
    session_key: str | None = None
    session_s: int = 12 * 3600

    @property
    def auth_configured(self) -> bool:
        """Whether a login is required (a token or a password hash is set)."""
        return bool(self.token or self.password_hash)

    def __repr__(self) -> str:  # never show the token, hash or key
        return f"ConsoleSettings(auth_configured={self.auth_configured}, user={self.user!r})"


@dataclass(frozen=True)
class ServeSettings:
    """How ``provision serve`` bounds its work (waitress's thread pool, connections, idle time).

    ``threads`` answer requests; at most ``connection_limit`` connections are open (more wait in
    the listen backlog); a connection idle for ``idle_timeout_s`` is closed (slow and half-open
    clients). Each client address may send ``refused_burst`` refused callbacks at once, then
    ``refused_per_minute``; beyond that it gets 429 until its bucket refills. ``reuse_port``
    (``SO_REUSEPORT``) lets several ``provision serve`` processes listen on one port.
    """

    threads: int = 8
    connection_limit: int = 1000
    idle_timeout_s: float = 30.0
    refused_burst: int = 20
    refused_per_minute: int = 60
    reuse_port: bool = False


_SERVE_ENV = {
    "threads": "PROVISION_SERVE_THREADS",
    "connection_limit": "PROVISION_SERVE_CONNECTION_LIMIT",
    "idle_timeout_s": "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS",
    "refused_burst": "PROVISION_SERVE_REFUSED_BURST",
    "refused_per_minute": "PROVISION_SERVE_REFUSED_PER_MINUTE",
}


def serve_settings_from_env(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """``ServeSettings`` from ``PROVISION_SERVE_*`` variables (ranges: ``BOUNDS``)."""
    env = os.environ if environ is None else environ
    raw = env.get("PROVISION_SERVE_REUSEPORT", "").strip().lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise InvalidInputError("PROVISION_SERVE_REUSEPORT", f"must be true or false, got {raw[:40]!r}")
    return ServeSettings(**_numbers_from_env(environ, _SERVE_ENV), reuse_port=raw in ("true", "1"))


_HASH_RE = re.compile(r"^(scrypt|pbkdf2):[^$]+\$[^$]+\$[0-9a-f]+$")
_COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")
_EMAIL_RE = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+$")


def console_settings_from_env(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    """``ConsoleSettings`` from ``PROVISION_CONSOLE_{TOKEN,PASSWORD_HASH,USER,SESSION_KEY}``."""
    env = os.environ if environ is None else environ
    token = env.get("PROVISION_CONSOLE_TOKEN") or None
    if token is not None and len(token) < 16:
        raise InvalidInputError("PROVISION_CONSOLE_TOKEN", "must be at least 16 characters",
                                hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    password_hash = env.get("PROVISION_CONSOLE_PASSWORD_HASH") or None
    if password_hash is not None and not _HASH_RE.match(password_hash):
        raise InvalidInputError(
            "PROVISION_CONSOLE_PASSWORD_HASH", "must be a werkzeug password hash (scrypt:... or pbkdf2:...)",
            hint="python3 -c 'from werkzeug.security import generate_password_hash as g; print(g(\"...\"))'")
    user = env.get("PROVISION_CONSOLE_USER") or "operator"
    if not PRINTABLE_RE.fullmatch(user) or len(user) > 64:
        raise InvalidInputError("PROVISION_CONSOLE_USER", "must be 1-64 printable characters")
    return ConsoleSettings(token=token, password_hash=password_hash, user=user,
                           session_key=env.get("PROVISION_CONSOLE_SESSION_KEY") or None)


@dataclass(frozen=True)
class Branding:
    """What customers see on the callback pages: the app's name, logo, colours and support contact."""

    name: str = "our app"
    logo_url: str | None = None
    colour: str = "#1d4ed8"  # buttons, links, the header rule
    background: str = "#f8fafc"
    support: str | None = None  # an e-mail address or an http(s) URL

    @property
    def support_href(self) -> str | None:
        """The support contact as a link target (``mailto:`` for an address)."""
        if not self.support:
            return None
        return self.support if "://" in self.support else f"mailto:{self.support}"


def branding_from_env(environ: Mapping[str, str] | None = None) -> Branding:
    """``Branding`` from ``PROVISION_BRAND_{NAME,LOGO_URL,COLOUR,BACKGROUND,SUPPORT}``, checked."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    name = env.get("PROVISION_BRAND_NAME")
    if name:
        if not PRINTABLE_RE.fullmatch(name) or len(name) > 80:
            raise InvalidInputError("PROVISION_BRAND_NAME", "must be 1-80 printable characters")
        values["name"] = name
    logo = env.get("PROVISION_BRAND_LOGO_URL")
    if logo:
        values["logo_url"] = check_url("PROVISION_BRAND_LOGO_URL", logo)
    for field_name, var in (("colour", "PROVISION_BRAND_COLOUR"),
                            ("background", "PROVISION_BRAND_BACKGROUND")):
        raw = env.get(var)
        if raw:
            if not _COLOUR_RE.match(raw):  # it lands in CSS: nothing but a hex colour may pass
                raise InvalidInputError(var, f"must be a hex colour like #1d4ed8, got {raw[:20]!r}")
            values[field_name] = raw
    support = env.get("PROVISION_BRAND_SUPPORT")
    if support:
        if "://" in support:
            check_url("PROVISION_BRAND_SUPPORT", support)
        elif not _EMAIL_RE.match(support) or len(support) > 200:
            raise InvalidInputError("PROVISION_BRAND_SUPPORT", "must be an e-mail address or an http(s) URL")
        values["support"] = support
    return Branding(**values)


def callback_page_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``PROVISION_CALLBACK_PAGE_KEY``: the Fernet key of the customers' progress links, or None."""
    env = os.environ if environ is None else environ
    key = env.get("PROVISION_CALLBACK_PAGE_KEY") or None
    if key is not None:
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (ValueError, binascii.Error):
            valid = False
        if not valid:
            raise InvalidInputError("PROVISION_CALLBACK_PAGE_KEY",
                                    "must be a Fernet key (32 url-safe base64 bytes)",
                                    hint="python3 -c 'from cryptography.fernet import Fernet; "
                                    "print(Fernet.generate_key().decode())'")
    return key


#: Days of history kept row by row; older renewal rows become daily summaries (persistence.retention).
RETENTION_ENV = "PROVISION_HISTORY_RETENTION_DAYS"


def history_retention_days_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``PROVISION_HISTORY_RETENTION_DAYS`` as a whole number of days; 0 (or unset) keeps everything."""
    env = os.environ if environ is None else environ
    raw = (env.get(RETENTION_ENV) or "").strip()
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]{1,5}", raw) or int(raw) > 36500:
        raise InvalidInputError(RETENTION_ENV, f"must be a whole number of days from 0 to 36500 "
                                               f"(0 keeps everything), got {raw[:30]!r}")
    return int(raw)


def secret_keys_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The Fernet key list in ``PROVISION_SECRET_KEY`` (newest first), or None."""
    env = os.environ if environ is None else environ
    return env.get(ENV_KEY) or None


def environ_copy(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: the process environment) to adjust and pass on."""
    return dict(os.environ if environ is None else environ)


@dataclass(frozen=True)
class WorkerMetricsSettings:
    """``provision worker``'s own metrics listener: its port (None: no listener)."""

    port: int | None = None


def worker_metrics_settings_from_env(environ: Mapping[str, str] | None = None) -> WorkerMetricsSettings:
    """``PROVISION_WORKER_METRICS_PORT`` (1-65535; ``--metrics-port`` wins over it)."""
    return WorkerMetricsSettings(**_numbers_from_env(environ, {"port": "PROVISION_WORKER_METRICS_PORT"}))

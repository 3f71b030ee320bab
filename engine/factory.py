"""Building an ``Engine`` from URLs and environment variables (the CLI's and embedders' entry)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from persistence.database import DEFAULT_URL, create_db_engine, sqlite_path
from persistence.migrate import current_revision, head_revision, upgrade
from persistence.repository import Repository
from sandbox.defaults import BASE_PATH, DEFAULT_HOST, DEFAULT_ORG_SECRET, DEFAULT_PORT, DEFAULT_USER_SECRET

from .client import ClientSettings, ElementsClient
from .engine import Engine, EngineSettings
from .errors import InvalidInputError, ProvisionError
from .inputs import check_url
from .retry import RetryPolicy
from .secrets import load_codec

DEFAULT_BASE_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}{BASE_PATH}"


class SchemaOutdatedError(ProvisionError):
    """The database is not at the newest migration."""

    kind = "schema_outdated"


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
    return ClientSettings(
        base_url=base_url,
        user_secret=overrides.pop("user_secret", None)
        or env.get("ELEMENTS_USER_SECRET")
        or DEFAULT_USER_SECRET,
        org_secret=overrides.pop("org_secret", None) or env.get("ELEMENTS_ORG_SECRET") or DEFAULT_ORG_SECRET,
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


def open_repository(
    db_url: str, *, migrate: bool | None = None, environ: Mapping[str, str] | None = None
) -> Repository:
    """Connect, migrate (automatically for SQLite files; on request otherwise) and build the repository."""
    try:
        db = create_db_engine(db_url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types for bad URLs
        raise InvalidInputError(
            "--db",
            f"cannot use database URL ({type(exc).__name__}: {str(exc)[:120]})",
            hint="e.g. sqlite:///provision.db or postgresql+psycopg://user@host/db",
        ) from None
    path = sqlite_path(db.url)
    auto = db.url.get_backend_name() == "sqlite" if migrate is None else migrate
    if auto:
        upgrade(db)
    elif current_revision(db) != head_revision():
        raise SchemaOutdatedError("the database schema is not up to date",
                                  hint="Run `provision db upgrade` (with the same --db) first.")
    return Repository(db, load_codec(path, dict(environ) if environ is not None else None))


def open_engine(
    db_url: str | None = None,
    *,
    client: ElementsClient | None = None,
    environ: Mapping[str, str] | None = None,
    migrate: bool | None = None,
    **engine_kw: Any,
) -> Engine:
    """An ``Engine`` on ``db_url`` (default from the environment) talking to the configured platform."""
    repo = open_repository(db_url or db_url_from_env(environ), migrate=migrate, environ=environ)
    engine_kw.setdefault("settings", engine_settings_from_env(environ))
    engine_kw.setdefault("policy", retry_policy_from_env(environ))
    return Engine(repo, client or ElementsClient(client_settings_from_env(environ)), **engine_kw)

"""Building an ``Engine`` from URLs and environment variables (the CLI's and embedders' entry)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.clients.elements import ElementsClient
from engine.clients.webhooks import WebhookSender
from engine.clock import DatabaseClock
from engine.config import (
    WebhookSettings,
    client_settings_from_env,
    db_url_from_env,
    engine_settings_from_env,
    open_database,
    retry_policy_from_env,
    secret_keys_from_env,
    webhook_settings_from_env,
)
from engine.core.facade import Engine
from engine.errors import SchemaOutdatedError
from engine.security.crypto import load_codec
from engine.security.redaction import install as install_log_redaction
from persistence.database import sqlite_path
from persistence.migrate import current_revision, head_revision, upgrade
from persistence.repository import Repository


def open_repository(
    db_url: str, *, migrate: bool | None = None, environ: Mapping[str, str] | None = None
) -> Repository:
    """Connect, migrate (automatically for SQLite files; on request otherwise) and build the repository."""
    db = open_database(db_url)
    path = sqlite_path(db.url)
    auto = db.url.get_backend_name() == "sqlite" if migrate is None else migrate
    if auto:
        upgrade(db)
    elif current_revision(db) != head_revision():
        raise SchemaOutdatedError("the database schema is not up to date",
                                  hint="Run `provision db upgrade` (with the same --db) first.")
    return Repository(db, load_codec(path, secret_keys_from_env(environ)))


def open_engine(
    db_url: str | None = None,
    *,
    client: ElementsClient | None = None,
    environ: Mapping[str, str] | None = None,
    migrate: bool | None = None,
    webhook: WebhookSettings | None = None,
    **engine_kw: Any,
) -> Engine:
    """An ``Engine`` on ``db_url`` (default from the environment) talking to the configured platform.

    ``webhook`` (default: ``PROVISION_WEBHOOK_URL`` / ``PROVISION_WEBHOOK_SECRET``) makes the
    engine's worker deliver signed events there (README "Events").
    """
    # Logging is configured at the edges: here for embedders, in the CLI and in `serve` (idempotent).
    install_log_redaction()
    # Settings first: a bad variable is refused before the database (or its key file) is created.
    hooks = webhook or webhook_settings_from_env(environ)
    engine_kw.setdefault("settings", engine_settings_from_env(environ))
    engine_kw.setdefault("policy", retry_policy_from_env(environ))
    client = client or ElementsClient(client_settings_from_env(environ))
    repo = open_repository(db_url or db_url_from_env(environ), migrate=migrate, environ=environ)
    if hooks is not None:
        engine_kw.setdefault("webhooks", WebhookSender(hooks))
    # Leases and due times on the database's clock, so that workers with skewed clocks agree.
    engine_kw.setdefault("clock", DatabaseClock(repo.database_time))
    return Engine(repo, client, **engine_kw)

"""Building an ``Engine`` from URLs and environment variables (the CLI's and embedders' entry)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.clients.elements import ElementsClient
from engine.clients.webhooks import WebhookSender
from engine.clock import DatabaseClock
from engine.config import (
    ENV_KEY,
    EngineSettings,
    WebhookSettings,
    client_settings_from_env,
    db_url_from_env,
    engine_settings_from_env,
    open_database,
    retry_policy_from_env,
    secret_keys_from_env,
    webhook_settings_from_env,
)
from engine.core.element_check import ElementCheck, check_element
from engine.core.facade import Engine
from engine.core.heartbeat import Heartbeat
from engine.core.observe import Observers, StepTracer
from engine.core.realm_backfill import backfill_realms
from engine.errors import SchemaOutdatedError, SecretKeyError
from engine.security.crypto import KeyRing, load_codec
from engine.security.redaction import install as install_log_redaction
from persistence.database import sqlite_path
from persistence.migrate import HEAD, current_revision, upgrade
from persistence.rekey import sealed_sample
from persistence.repository import Repository


def open_repository(
    db_url: str, *, migrate: bool | None = None, environ: Mapping[str, str] | None = None,
    transaction_idle_s: float | None = None,
) -> Repository:
    """Connect, migrate (automatically for SQLite files; on request otherwise) and build the repository.

    ``transaction_idle_s``: on PostgreSQL, end a session idle that long in a transaction (a
    frozen worker), see ``EngineSettings.transaction_idle_s``; ``open_engine`` passes its own.
    """
    return _open_store(db_url, migrate, environ, transaction_idle_s)[0]


def _open_store(db_url: str, migrate: bool | None, environ: Mapping[str, str] | None,
                transaction_idle_s: float | None = None) -> tuple[Repository, KeyRing]:
    """The repository and its key ring (checked against the stored secrets)."""
    db = open_database(db_url, environ, transaction_idle_s=transaction_idle_s)
    path = sqlite_path(db.url)
    auto = db.url.get_backend_name() == "sqlite" if migrate is None else migrate
    if auto:
        upgrade(db)
    elif current_revision(db) != HEAD:
        raise SchemaOutdatedError("the database schema is not up to date",
                                  hint="Apply the migrations first: open_engine(db_url, migrate=True), or "
                                       "persistence.migrate.upgrade.")
    sample = sealed_sample(db)
    codec = load_codec(path, secret_keys_from_env(environ), has_data=bool(sample))
    check_key(codec, sample)
    return Repository(db, codec), codec


def check_key(codec: KeyRing, sample: list[bytes]) -> None:
    """Refuse a key that opens none of ``sample`` (stored secrets): it is another database's key.

    One row that no key opens is quarantined by the worker; a key that opens none is a wrong key,
    and an engine started with it would seal new rows that the right key cannot open.
    """
    for blob in sample:
        try:
            codec.open(blob)
        except SecretKeyError:
            continue
        return
    if sample:
        raise SecretKeyError(
            f"the configured encryption key (ids {', '.join(codec.key_ids)}) opens none of the stored "
            "secrets",
            hint=f"Set {ENV_KEY} (or restore the key file beside the SQLite database) to the key this "
                 "database was written with; during a rotation give both, NEW,OLD.",
        )


def open_engine(
    db_url: str | None = None,
    *,
    client: ElementsClient | None = None,
    environ: Mapping[str, str] | None = None,
    migrate: bool | None = None,
    webhook: WebhookSettings | None = None,
    role: str = "worker",
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
    # A frozen worker's transaction must not hold rows past its lease (PostgreSQL; issue 16 item 5).
    settings = engine_kw["settings"]
    idle_s = settings.db_transaction_idle_s if isinstance(settings, EngineSettings) else None
    repo, keys = _open_store(db_url or db_url_from_env(environ), migrate, environ, idle_s)
    # Attempts made before migration 0010: their realms claimed once, with the keys (issue 17);
    # when that is done (the common case), one primary-key lookup.
    backfill_realms(repo, now=repo.database_time)
    # Every engine built here takes part in key rotation: it reloads its keys and advertises them.
    engine_kw.setdefault("heartbeat", Heartbeat(repo.engine, keys, role=role))
    if hooks is not None:
        engine_kw.setdefault("webhooks", WebhookSender(hooks))
    # Step spans go to the global OpenTelemetry provider (a no-op unless the process installed an SDK).
    given = engine_kw.get("observer")
    engine_kw["observer"] = StepTracer() if given is None else Observers(given, StepTracer())
    # Leases and due times on the database's clock, so that workers with skewed clocks agree.
    engine_kw.setdefault("clock", DatabaseClock(repo.database_time))
    return Engine(repo, client, **engine_kw)


def check_element_online(element: str, config_keys: Iterable[str], *,
                         environ: Mapping[str, str] | None = None) -> ElementCheck:
    """``Engine.element_check`` without a database: asks the configured platform about ``element``.

    The CLI calls it before it opens (and perhaps creates) the database, so that a refused start
    leaves nothing behind.
    """
    client = ElementsClient(client_settings_from_env(environ))
    try:
        return check_element(client, element, config_keys)
    finally:
        client.close()

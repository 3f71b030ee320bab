"""The database: its URL (``PROVISION_DB_URL``), connection settings and ``open_database``."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from engine.config.bounds import numbers_from_env
from engine.config.environment import environment
from engine.errors import InvalidInputError
from persistence.database import (
    DEFAULT_POOL_SIZE,
    DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    DEFAULT_URL,
    create_db_engine,
)

_DATABASE_ENV = {"sqlite_busy_timeout_s": "PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS",
                 "pool_size": "PROVISION_DB_POOL_SIZE"}


def db_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``PROVISION_DB_URL`` or the embedded SQLite default."""
    env = environment(environ)
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
    return DatabaseSettings(**numbers_from_env(environ, _DATABASE_ENV))


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

"""Checks the CLI makes before it opens anything: read-only commands never create a database."""
from __future__ import annotations

from engine.cli.options import UsageError
from engine.config import (
    client_settings_from_env,
    engine_settings_from_env,
    retry_policy_from_env,
    webhook_settings_from_env,
)
from persistence.database import sqlite_path


def require_existing_database(db_url: str) -> None:
    """``UsageError`` (exit 2) naming the path and ``--db`` when a SQLite file does not exist.

    ``list``, ``show``, ``diagram ID`` only read: run in the wrong folder, they would otherwise
    create an empty ``provision.db`` and a key file beside it, and report nothing.
    """
    # A bad variable is reported first, as open_engine does (it would be the next error anyway).
    engine_settings_from_env()
    retry_policy_from_env()
    client_settings_from_env()
    webhook_settings_from_env()
    try:
        path = sqlite_path(db_url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is refused, naming --db, on open
        return
    if path is not None and not path.exists():
        raise UsageError("--db", f"no database at {path} (read-only commands never create one)",
                         hint="Pass --db URL (or set PROVISION_DB_URL) to the database the worker uses.")

"""Persistence: SQLAlchemy tables, the repository (guarded UPDATEs, leases), Alembic migrations."""
from persistence.codec import SecretCodec
from persistence.database import DEFAULT_URL, create_db_engine, sqlite_path
from persistence.inbox import CallbackRecord, NewCallback
from persistence.migrate import upgrade
from persistence.repository import Repository

__all__ = [
    "CallbackRecord", "DEFAULT_URL", "NewCallback", "Repository", "SecretCodec", "create_db_engine",
    "sqlite_path", "upgrade",
]

"""Persistence: SQLAlchemy tables, the repository (guarded UPDATEs, leases), Alembic migrations."""
from .codec import SecretCodec
from .database import DEFAULT_URL, create_db_engine, sqlite_path
from .inbox import CallbackRecord, NewCallback
from .migrate import upgrade
from .repository import Repository

__all__ = [
    "CallbackRecord", "DEFAULT_URL", "NewCallback", "Repository", "SecretCodec", "create_db_engine",
    "sqlite_path", "upgrade",
]

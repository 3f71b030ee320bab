"""Persistence: SQLAlchemy tables, the repository (guarded UPDATEs, leases), Alembic migrations."""
from persistence.codec import Codec, RekeyCodec
from persistence.database import DEFAULT_URL, create_db_engine, sqlite_path
from persistence.inbox import CallbackRecord
from persistence.migrate import upgrade
from persistence.repository import Repository
from persistence.writes import NewCallback, Write

__all__ = [
    "CallbackRecord", "Codec", "DEFAULT_URL", "NewCallback", "RekeyCodec", "Repository", "Write",
    "create_db_engine", "sqlite_path", "upgrade",
]

"""Alembic migrations driven from code (``provision db upgrade`` and automatic first use).

Alembic itself (with Mako and the migration scripts) is imported only when a database needs
migrating: opening an up-to-date one, which every CLI command and worker does, checks the revision
with one query against ``HEAD``. Importing Alembic was a seventh of a CLI command's start-up.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: The newest migration's revision id. A new migration updates it; a test checks that it is
#: the head of the scripts in ``MIGRATIONS_DIR``.
HEAD = "0013"

#: Alembic's bookkeeping table (its default name, in the connection's default schema).
VERSION_TABLE = "alembic_version"


def alembic_config(engine: sa.Engine) -> Config:
    """An Alembic Config that runs on ``engine`` (no alembic.ini needed)."""
    from alembic.config import Config  # noqa: PLC0415 - only when migrating (see the docstring)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The newest migration's revision id, as the scripts say (``HEAD`` is the fast answer)."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - reads every script

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated.

    Our migrations are one line, so the table holds one row. Should it hold several (branches
    merged by hand), they are returned joined, which matches no revision: the engine then refuses
    the schema as outdated, and ``upgrade`` hands the table to Alembic, which names the problem.
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return ",".join(sorted(rows)) or None


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Apply every pending migration; returns the revision reached. Safe to call repeatedly."""
    if revision == "head" and current_revision(engine) == HEAD:
        return HEAD  # the common case on every open: one check, no second read
    from alembic import command  # noqa: PLC0415 - only when migrating (see the docstring)

    command.upgrade(alembic_config(engine), revision)
    rev = current_revision(engine)
    assert rev is not None
    return rev

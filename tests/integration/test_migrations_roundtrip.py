"""Every migration's downgrade runs, on SQLite and PostgreSQL: an empty database goes to head, down
to base and up to head again with the same schema; a database holding an attempt with history goes
down one revision at a time, keeping its rows while their tables exist, and back up to head.

Batch-mode downgrades rebuild ``attempts`` on SQLite, which the history trigger of migration 0004
(it names ``attempts``) makes SQLite refuse; these tests are what found it in 0006 to 0008."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from testkit import QUICK_CONFIG

from engine import Engine
from persistence.database import create_db_engine
from persistence.migrate import MIGRATIONS_DIR, alembic_config, current_revision, head_revision, upgrade
from states import State


def schema_of(db: sa.Engine) -> dict[str, Any]:
    """Tables with their columns and indexes, plus triggers: what a round trip must give back."""
    inspector = sa.inspect(db)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        out[table] = (sorted(c["name"] for c in inspector.get_columns(table)),
                      sorted(str(i["name"]) for i in inspector.get_indexes(table)))
    with db.connect() as conn:
        if db.dialect.name == "postgresql":
            q = "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = current_schema()"
        else:
            q = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        out["<triggers>"] = sorted({str(r[0]) for r in conn.exec_driver_sql(q)})
    return out


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def count(db: sa.Engine, table: str) -> int | None:
    """Rows in ``table``, or None when it does not exist (at this revision)."""
    if not sa.inspect(db).has_table(table):
        return None
    with db.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_an_empty_database_goes_down_to_base_and_up_to_head_again(db_url: str) -> None:
    db = create_db_engine(db_url)
    try:
        assert upgrade(db) == head_revision()
        at_head = schema_of(db)
        assert "realm_claims" in at_head and at_head["<triggers>"] == ["history_event"]
        command.downgrade(alembic_config(db), "base")
        assert current_revision(db) is None
        assert set(schema_of(db)) <= {"alembic_version", "<triggers>"} and not schema_of(db)["<triggers>"]
        assert upgrade(db) == head_revision()
        assert schema_of(db) == at_head
    finally:
        db.dispose()


def test_a_database_with_an_attempt_and_history_goes_down_step_by_step_and_back(
        db_url: str, make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    attempt = engine.start("quickbooks", "acme books", flow="quick", config=QUICK_CONFIG, customer="acme-42")
    engine.run_until_idle()
    assert engine.get(attempt.id).state is State.PROVISIONED
    engine.close()
    db = create_db_engine(db_url)
    try:
        steps = count(db, "history")
        assert steps and count(db, "attempts") == 1
        # Down to head-1 and back first (the common operator rollback), then all the way down.
        command.downgrade(alembic_config(db), "-1")
        assert count(db, "attempts") == 1 and count(db, "history") == steps
        assert upgrade(db) == head_revision()
        for below in reversed(["base", *revisions()[:-1]]):
            command.downgrade(alembic_config(db), "-1")
            assert current_revision(db) == (None if below == "base" else below)
            if below != "base":  # 0001's downgrade drops the tables themselves
                assert count(db, "attempts") == 1 and count(db, "history") == steps, below
        assert upgrade(db) == head_revision()
        assert count(db, "attempts") == 0
    finally:
        db.dispose()
    # The rolled back and re-applied database works: a new attempt is provisioned.
    again = make_engine()
    fresh = again.start("quickbooks", "globex books", flow="quick", config=QUICK_CONFIG)
    again.run_until_idle()
    assert again.get(fresh.id).state is State.PROVISIONED

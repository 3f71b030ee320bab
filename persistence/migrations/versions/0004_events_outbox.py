"""The events outbox: one ``events`` row per ``history`` row, written by a trigger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Every committed transition inserts a history row; a trigger on ``history`` inserts the event in
the same transaction, so no code path that writes transitions can forget it (issue 10/12).

``seq`` is the feed's cursor and must never let a reader skip an event. SQLite has one writer, so
commit order is ``seq`` order. PostgreSQL takes sequence values before commit, so a reader could
see seq 11 committed while seq 10 is still in flight. The PostgreSQL trigger is therefore a
DEFERRED constraint trigger: it runs at COMMIT, under a transaction-level advisory lock, and takes
``seq`` there. The lock is released only after the commit is visible, so an event-writing
transaction takes its ``seq`` after every smaller ``seq`` became visible: whatever a reader sees
is a prefix of the sequence. (The alternative, filtering on ``xact_id < pg_snapshot_xmin(...)``,
stalls every feed and webhook while ANY transaction in the cluster stays open.) The lock is held
only for the commit itself; transactions queue there, not while they run.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SQLITE_TRIGGER = """
CREATE TRIGGER history_event AFTER INSERT ON history
BEGIN
    INSERT INTO events (attempt_id, history_seq, created_at, worker, instance_id, delivery, tries,
                        next_try_at)
    VALUES (NEW.attempt_id, NEW.seq, NEW."at", NEW.worker,
            (SELECT instance_id FROM attempts WHERE id = NEW.attempt_id), 'pending', 0, NEW."at");
END
"""

_PG_FUNCTION = """
CREATE FUNCTION provision_history_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Serialise the seq-taking part of commits (see the migration's docstring); keyed by schema,
    -- so databases in different schemas do not wait for each other.
    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.events'));
    INSERT INTO events (attempt_id, history_seq, created_at, worker, instance_id, delivery, tries,
                        next_try_at)
    SELECT NEW.attempt_id, NEW.seq, NEW."at", NEW.worker, a.instance_id, 'pending', 0, NEW."at"
    FROM (SELECT 1) AS one LEFT JOIN attempts a ON a.id = NEW.attempt_id;
    RETURN NULL;
END
$$
"""

_PG_TRIGGER = """
CREATE CONSTRAINT TRIGGER history_event AFTER INSERT ON history
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION provision_history_event()
"""


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("attempt_id", sa.String(36), nullable=False),
        sa.Column("history_seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.Column("instance_id", sa.String(64), nullable=True),
        sa.Column("delivery", sa.String(12), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("next_try_at", UTCDateTime, nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_attempt_seq", "events", ["attempt_id", "seq"])
    op.create_index("ix_events_worker_seq", "events", ["worker", "seq"])
    op.create_index("ix_events_pending", "events", ["next_try_at"],
                    sqlite_where=sa.text("delivery = 'pending'"),
                    postgresql_where=sa.text("delivery = 'pending'"))
    if pg:
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER IF EXISTS history_event" + (" ON history" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION IF EXISTS provision_history_event()")
    op.drop_table("events")

"""Event positions: the feed's order without a lock in every commit (issue 19, scale).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

Until now the feed's cursor was ``events.seq``, and on PostgreSQL the trigger of migration 0004 took
``seq`` in the COMMIT under one advisory lock held through the WAL flush: commits that wrote events
flushed one after another, never sharing a flush, so the database took at most about one of them
per WAL flush whatever the number of cores (``bench/outbox_lock.py``; ``bench/pg_waits.py`` showed
that lock and the flush behind it in most samples of busy backends).

Now ``seq`` only numbers the rows in the order they were written, and the feed's cursor is the new
``position``:

- SQLite has one writer, so the trigger gives each event its position when it writes it (the next
  one after the largest, read through the unique index).
- PostgreSQL writes events without a position and without a lock. ``persistence.outbox`` positions
  them before every read of the feed, every webhook claim and every redelivery: one transaction,
  under a lock only positioning takes, numbers every committed event still without one after the
  largest position, in ``seq`` order. A reader therefore sees whole positioning transactions, each
  after the one before: what it sees is always a prefix of the positions, and resuming after the
  last one it saw never skips an event. The events of one attempt keep their order: a later
  transition of an attempt commits only after the earlier one did (the attempt's row lock), so its
  event has the larger ``seq``, and it is never visible while the earlier one is not.

Existing events keep their number: ``position = seq``. (Migration 0013 changed where new positions
come from, once events could be deleted: see there.) A downgrade drops the positions; readers
then resume by ``seq`` again, which on PostgreSQL numbers the events written since this upgrade in
the order they were written, not in the order the feed showed them.
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The SQLite trigger, with (``position``) or without (0004's, for the downgrade) the event's position.
_SQLITE_TRIGGER = """
CREATE TRIGGER history_event AFTER INSERT ON history
BEGIN
    INSERT INTO events (attempt_id, history_seq, created_at, worker, instance_id, delivery, tries,
                        next_try_at{column})
    VALUES (NEW.attempt_id, NEW.seq, NEW."at", NEW.worker,
            (SELECT instance_id FROM attempts WHERE id = NEW.attempt_id), 'pending', 0, NEW."at"{value});
END
"""
_POSITION_COLUMN = ", position"
_NEXT_POSITION = ",\n            (SELECT coalesce(max(position), 0) + 1 FROM events)"

# The PostgreSQL trigger function, without (now) or with (0004's, for the downgrade) its lock. It
# stays a DEFERRED constraint trigger, as 0004 made it: it runs at COMMIT, so the event takes the
# attempt's instance_id as the transaction left it.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION provision_history_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{lock}
    INSERT INTO events (attempt_id, history_seq, created_at, worker, instance_id, delivery, tries,
                        next_try_at)
    SELECT NEW.attempt_id, NEW.seq, NEW."at", NEW.worker, a.instance_id, 'pending', 0, NEW."at"
    FROM (SELECT 1) AS one LEFT JOIN attempts a ON a.id = NEW.attempt_id;
    RETURN NULL;
END
$$
"""
_OLD_LOCK = "\n    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.events'));"


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.add_column("events", sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                      nullable=True))
    op.execute("UPDATE events SET position = seq")
    op.create_index("ux_events_position", "events", ["position"], unique=True)
    op.create_index("ix_events_unpositioned", "events", ["seq"],
                    sqlite_where=sa.text("position IS NULL"), postgresql_where=sa.text("position IS NULL"))
    # The hooks read their own worker's events in position order.
    op.drop_index("ix_events_worker_seq", "events")
    op.create_index("ix_events_worker_position", "events", ["worker", "position"])
    if pg:
        op.execute(_PG_FUNCTION.format(lock=""))
    else:
        op.execute("DROP TRIGGER history_event")
        op.execute(_SQLITE_TRIGGER.format(column=_POSITION_COLUMN, value=_NEXT_POSITION))


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute(_PG_FUNCTION.format(lock=_OLD_LOCK))
    else:
        op.execute("DROP TRIGGER history_event")
        op.execute(_SQLITE_TRIGGER.format(column="", value=""))
    op.drop_index("ix_events_worker_position", "events")
    op.create_index("ix_events_worker_seq", "events", ["worker", "seq"])
    op.drop_index("ix_events_unpositioned", "events")
    op.drop_index("ux_events_position", "events")
    op.drop_column("events", "position")  # as the other migrations do (SQLite 3.35+ drops columns)

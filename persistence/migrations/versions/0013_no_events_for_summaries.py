"""History retention's daily summaries write no event (issue 19, bug fix).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

``provision prune`` folds a day of renewal rows into one summary row (``persistence.retention``):
it deletes the rows and inserts the summary. The ``history`` trigger wrote an event for each
summary, as for a new transition: the feed showed one more renewal per attempt and day folded, and
webhooks sent it (3 attempts with 110 days to fold: 331 new events). A summary is not a transition,
so the trigger now skips rows whose ``outcome`` is ``summary``.

The pruner also deletes the events of the rows it folds, in the same transaction
(``HistoryPruner``): before, they stayed behind, out of the feed (which joins history) but in the
table, so ``events`` kept growing by a row per renewal. It finds them by ``(attempt_id,
history_seq)``, so the index of an attempt's events is now on those columns instead of
``(attempt_id, seq)``; the webhook claim orders an attempt's events by ``history_seq`` as well,
which is the same order (migration 0012).

Since events can now be deleted, a position is never derived from the largest one left: when a
prune took the newest events, the next event would have taken a position a reader had already
seen and been skipped. SQLite gives an event its ``seq`` as position (AUTOINCREMENT never hands a
value out twice); PostgreSQL's positioning takes them from the sequence ``events_position_seq``,
in ``seq`` order.
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# 0012's SQLite trigger, with (now) or without (the downgrade) the condition.
_SQLITE_TRIGGER = """
CREATE TRIGGER history_event AFTER INSERT ON history{when}
BEGIN
    INSERT INTO events (attempt_id, history_seq, created_at, worker, instance_id, delivery, tries,
                        next_try_at, position)
    VALUES (NEW.attempt_id, NEW.seq, NEW."at", NEW.worker,
            (SELECT instance_id FROM attempts WHERE id = NEW.attempt_id), 'pending', 0, NEW."at",
            {position});
END
"""
# The seq the row is about to get (one writer; AUTOINCREMENT: the largest ever handed out, plus one).
_SQLITE_SEQ = "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0) + 1"
_SQLITE_MAX = "(SELECT coalesce(max(position), 0) + 1 FROM events)"  # 0012's, for the downgrade
# 0004's PostgreSQL trigger (its function is 0012's), with or without the condition.
_PG_TRIGGER = """
CREATE CONSTRAINT TRIGGER history_event AFTER INSERT ON history
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW{when} EXECUTE FUNCTION provision_history_event()
"""
_SQLITE_WHEN = "\nWHEN NEW.outcome IS NOT 'summary'"
_PG_WHEN = "\nWHEN (NEW.outcome IS DISTINCT FROM 'summary')"


def _replace(when_sqlite: str, when_pg: str, position: str) -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER history_event" + (" ON history" if pg else ""))
    op.execute(_PG_TRIGGER.format(when=when_pg) if pg
               else _SQLITE_TRIGGER.format(when=when_sqlite, position=position))


def upgrade() -> None:
    _replace(_SQLITE_WHEN, _PG_WHEN, f"({_SQLITE_SEQ})")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE events_position_seq")
        op.execute("SELECT setval('events_position_seq', "
                   "coalesce((SELECT max(position) FROM events), 0) + 1, false)")
    op.drop_index("ix_events_attempt_seq", "events")
    op.create_index("ix_events_attempt_history", "events", ["attempt_id", "history_seq"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE events_position_seq")
    op.drop_index("ix_events_attempt_history", "events")
    op.create_index("ix_events_attempt_seq", "events", ["attempt_id", "seq"])
    _replace("", "", _SQLITE_MAX)

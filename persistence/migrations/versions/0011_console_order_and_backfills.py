"""The console's newest-first index and the ``backfills`` bookkeeping table (issue 17).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

- ``ix_attempts_created_id`` on ``(created_at DESC, id)``: the console and ``Engine.find`` page by
  keyset ``ORDER BY created_at DESC, id`` (``persistence.attempt_filter.page_query``). Without it the
  unfiltered first page sorted the whole table; with it both backends walk the index and stop
  after LIMIT rows (the plans are in docs/design.md, "Console paging").
- ``backfills``: one row per pending one-off data step that a migration cannot do itself. The
  first is ``realm_ids``: attempts made before migration 0010 carry their realmId only inside
  their encrypted secrets, which a migration cannot open (it has no keys), so the step runs in
  ``provision db upgrade`` and when an engine opens with keys (``engine.core.realm_backfill``).
  The row is inserted here only when such attempts exist (live, no realm_id yet), and deleted when
  the step is done, so the common case is one primary-key lookup that finds nothing.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_attempts_created_id", "attempts", [sa.text("created_at DESC"), "id"])
    op.create_table(
        "backfills",
        sa.Column("name", sa.String(40), nullable=False),
        # Keyset progress over (created_at, id): a run resumes after the last committed batch.
        sa.Column("after_created_at", UTCDateTime, nullable=True),
        sa.Column("after_id", sa.String(36), nullable=True),
        # True once every row was visited; only the ``skipped`` ones (unreadable) are tried again.
        sa.Column("scanned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("skipped", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_backfills"),
    )
    # Live attempts (as states.realm.NOT_LIVE) without a realm_id: made before 0010, or consent
    # attempts still waiting for their callback. Only then is there anything to look at.
    op.execute(sa.text(
        "INSERT INTO backfills (name, scanned, skipped) SELECT 'realm_ids', :no, '[]' WHERE EXISTS "
        "(SELECT 1 FROM attempts WHERE realm_id IS NULL AND state NOT IN ('FAILED', 'DISCONNECTED'))"
    ).bindparams(no=False))


def downgrade() -> None:
    op.drop_table("backfills")
    op.drop_index("ix_attempts_created_id", "attempts")

"""When the current renewal first failed, so the renewal budget counts from there (issue 16 item 4).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

The 4-day renewal budget used to count from ``next_renewal_at``: an imported, long-overdue token
or a worker that was down for days failed ``retries_exhausted`` on its first 503. The budget now
counts from this column, set by the first failed try of a renewal and cleared by any success.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("renewal_failing_since", UTCDateTime, nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not batch mode: batch mode rebuilds ``attempts``, which the
    # history trigger of migration 0004 (it names ``attempts``) makes SQLite refuse.
    op.drop_column("attempts", "renewal_failing_since")

"""The ``workers`` heartbeat table (issue 16 item 2, issue 18 item 6).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Each running engine upserts one row every few seconds: who it is, when it last ticked (on the
database's clock, so workers with skewed clocks compare fairly), the ids of the encryption keys it
holds, and how many leases its last tick held. ``provision workers`` and the console list the live
ones; ``provision keys rotate`` waits until every live worker holds the new key before it
re-encrypts, and retires the old key only when no live worker still lacks the new one.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("last_tick_at", UTCDateTime, nullable=False),
        sa.Column("key_ids", sa.String(200), nullable=False),
        sa.Column("leases", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_workers"),
    )


def downgrade() -> None:
    op.drop_table("workers")

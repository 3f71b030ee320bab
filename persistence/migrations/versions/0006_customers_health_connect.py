"""Customers, health checks and connect links on ``attempts`` (issue 10/12 must-haves 3, 5, 6).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

- ``customer``: the application's own id for the account, with an index on
  ``(customer, element_key)``: ``list --customer`` and the duplicate-connection guard
  (``engine.core.guard``) are one range each.
- ``last_check_at``, ``health``, ``health_reason``: the last health check's result
  (``engine.core.health``).
- ``connect_token_hash``: the SHA-256 of the single-use connect link's token (the token itself is
  never stored); cleared when the link is used (``engine.core.connect``).
- ``replaces``: the live attempt a ``--replace`` start retires once it is PROVISIONED
  (``engine.core.guard``), with a partial index: the tick's look-up reads only such rows.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, no default): instant on both databases, no table rebuild.
    op.add_column("attempts", sa.Column("customer", sa.String(200), nullable=True))
    op.add_column("attempts", sa.Column("last_check_at", UTCDateTime, nullable=True))
    op.add_column("attempts", sa.Column("health", sa.String(16), nullable=True))
    op.add_column("attempts", sa.Column("health_reason", sa.String(200), nullable=True))
    op.add_column("attempts", sa.Column("connect_token_hash", sa.String(64), nullable=True))
    op.add_column("attempts", sa.Column("replaces", sa.String(36), nullable=True))
    op.create_index("ix_attempts_customer_element", "attempts", ["customer", "element_key"])
    op.create_index("ix_attempts_connect_token_hash", "attempts", ["connect_token_hash"],
                    unique=True)
    replacing = sa.text("replaces IS NOT NULL")
    op.create_index("ix_attempts_replaces", "attempts", ["replaces"], sqlite_where=replacing,
                    postgresql_where=replacing)


def downgrade() -> None:
    op.drop_index("ix_attempts_replaces", "attempts")
    op.drop_index("ix_attempts_connect_token_hash", "attempts")
    op.drop_index("ix_attempts_customer_element", "attempts")
    # Plain DROP COLUMNs (SQLite 3.35+), not batch mode: batch mode rebuilds ``attempts``, which the
    # history trigger of migration 0004 (it names ``attempts``) makes SQLite refuse.
    for name in ("replaces", "connect_token_hash", "health_reason", "health", "last_check_at", "customer"):
        op.drop_column("attempts", name)

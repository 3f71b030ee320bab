"""The realmId on attempts and the ``realm_claims`` table (issue 10/12 must-have 3).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

- ``attempts.realm_id``: the provider account (QuickBooks company) the callback named; not a
  secret (Intuit shows it in the QuickBooks UI), so a plain column with an index on
  ``(element_key, realm_id)`` for rows that have one: ``show`` prints it, operators search by it.
- ``realm_claims``: one row per (element, realm), naming the attempt that holds it. Its primary
  key makes the callback-time duplicate guard race-safe between workers (``persistence.realms``).
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("realm_id", sa.String(64), nullable=True))
    known = sa.text("realm_id IS NOT NULL")
    op.create_index("ix_attempts_realm", "attempts", ["element_key", "realm_id"], sqlite_where=known,
                    postgresql_where=known)
    op.create_table(
        "realm_claims",
        sa.Column("element_key", sa.String(100), nullable=False),
        sa.Column("realm_id", sa.String(64), nullable=False),
        sa.Column("attempt_id", sa.String(36), nullable=False),
        sa.Column("claimed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("element_key", "realm_id", name="pk_realm_claims"),
    )


def downgrade() -> None:
    op.drop_table("realm_claims")
    op.drop_index("ix_attempts_realm", "attempts")
    # A plain DROP COLUMN (SQLite 3.35+), not batch mode: batch mode rebuilds the table, which the
    # history trigger of migration 0004 (it names ``attempts``) makes SQLite refuse.
    op.drop_column("attempts", "realm_id")

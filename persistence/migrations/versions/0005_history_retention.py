"""An index over the renewal rows of ``history``, for retention (issue 19).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

``persistence.retention`` replaces renewal rows older than the retention cutoff with one daily
summary per attempt and day. Per batch of attempts it reads, for each attempt, its raw renewal
rows before the cutoff (``outcome = 'ok'``) and the summaries of the same days (``outcome =
'summary'``): with this partial index both are one range each, whatever the length of the rest of
the attempt's history, so the hourly run stays cheap on a table of a billion rows. Only renewal
rows are indexed, so the other transitions pay nothing for it.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WHERE = sa.text("\"trigger\" = 'renew'")


def upgrade() -> None:
    op.create_index("ix_history_renewals", "history", ["attempt_id", "outcome", "at"],
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_history_renewals", table_name="history")

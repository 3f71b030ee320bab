"""Keep the applied callback's parameters in their own encrypted column.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Applying a callback used to merge its parameters into the ``secrets`` blob: read the row,
decrypt, merge, encrypt, write. With a column of their own a callback is applied by one guarded
statement that needs no read (``Repository.apply_callback``). Rows written before keep the
parameters inside ``secrets``, where reads still find them.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("callback_secrets", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+), not batch mode: batch mode's table rebuild drops
    # ``attempts``, which SQLite refuses while ``history`` rows reference it (foreign keys are on).
    op.drop_column("attempts", "callback_secrets")

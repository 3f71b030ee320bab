"""Who renews an attempt's tokens: ``attempts.renewal_owner`` (issue 15 must-have 3).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Every PROVISIONED attempt has ONE renewal owner (DESIGN §7, "One owner per token"): ``engine``
(it refreshes ahead of the platform and pushes the tokens) or ``platform`` (Cloud Elements
refreshes; the engine only watches the instance). Existing rows get their flow's default: quick
attempts brought their own tokens (``engine``), consent attempts' tokens live on the platform.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("renewal_owner", sa.String(16), nullable=True))
    op.execute("UPDATE attempts SET renewal_owner = CASE WHEN flow = 'quick' THEN 'engine' "
               "ELSE 'platform' END")


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not batch mode: batch mode rebuilds ``attempts``, which the
    # history trigger of migration 0004 (it names ``attempts``) makes SQLite refuse.
    op.drop_column("attempts", "renewal_owner")

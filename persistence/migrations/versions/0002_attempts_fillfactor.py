"""Leave free space in the attempts table's pages (PostgreSQL fillfactor 70).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Every step updates its attempt row twice: the claim (lease columns) and the transition. With
full pages each update writes the new row version to another page and adds an entry to every
index. With 30% free space, an update that changes no indexed column (the claim, a reschedule)
stays on its page as a heap-only tuple and touches no index. bench/README.md has the figures.
Existing pages keep their layout until rewritten; new and updated rows use the free space.
SQLite has no such setting.
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE attempts SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE attempts RESET (fillfactor)")

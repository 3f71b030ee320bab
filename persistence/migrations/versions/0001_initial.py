"""Initial schema: attempts, history, callbacks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Frozen DDL on purpose (a migration must not change when ``schema.py`` does); the test
``test_migrations_match_schema`` proves the two agree.
"""
import sqlalchemy as sa
from alembic import op

from persistence.columns import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("element_key", sa.String(100), nullable=False),
        sa.Column("flow", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("history_seq", sa.Integer, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("next_run_at", UTCDateTime, nullable=True),
        sa.Column("deadline_at", UTCDateTime, nullable=True),
        sa.Column("callback_wait_s", sa.Integer, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.JSON, nullable=True),
        sa.Column("failure_reason", sa.String(40), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("state_nonce_hash", sa.String(64), nullable=True),
        sa.Column("request_token_hash", sa.String(64), nullable=True),
        sa.Column("instance_id", sa.String(64), nullable=True),
        sa.Column("refresh_interval_s", sa.BigInteger, nullable=True),
        sa.Column("refresh_time", sa.BigInteger, nullable=True),
        sa.Column("next_renewal_at", UTCDateTime, nullable=True),
        sa.Column("renewals", sa.Integer, nullable=False),
        sa.Column("secrets", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.UniqueConstraint("idempotency_key", name="uq_attempts_idempotency_key"),
        sa.UniqueConstraint("state_nonce_hash", name="uq_attempts_state_nonce_hash"),
    )
    op.create_index(
        "ix_attempts_due",
        "attempts",
        ["next_run_at"],
        sqlite_where=sa.text("next_run_at IS NOT NULL"),
        postgresql_where=sa.text("next_run_at IS NOT NULL"),
    )
    op.create_index("ix_attempts_state_created", "attempts", ["state", "created_at"])
    op.create_index("ix_attempts_element_created", "attempts", ["element_key", "created_at"])
    op.create_table(
        "history",
        sa.Column("attempt_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("dest", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"], name="fk_history_attempt_id_attempts"),
        sa.PrimaryKeyConstraint("attempt_id", "seq", name="pk_history"),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("attempt_id", sa.String(36), nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("params", sa.LargeBinary, nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
    )
    op.create_index("ix_callbacks_attempt", "callbacks", ["attempt_id", "status"])


def downgrade() -> None:
    op.drop_table("callbacks")
    op.drop_table("history")
    op.drop_table("attempts")

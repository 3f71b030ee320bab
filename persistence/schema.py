"""Table definitions only (DESIGN §3). Migrations in ``persistence/migrations`` create them."""
from __future__ import annotations

import sqlalchemy as sa

from persistence.columns import UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
    sa.Column("element_key", sa.String(100), nullable=False),
    sa.Column("flow", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("history_seq", sa.Integer, nullable=False),
    # How often the current state's step was claimed: > 1 means it may have run before (crash).
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # When a worker should act next: the next step, a retry, the callback deadline or the renewal.
    # NULL while nothing is due (terminal states).
    sa.Column("next_run_at", UTCDateTime, nullable=True),
    sa.Column("deadline_at", UTCDateTime, nullable=True),
    sa.Column("callback_wait_s", sa.Integer, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_error", sa.JSON, nullable=True),
    sa.Column("failure_reason", sa.String(40), nullable=True),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("state_nonce_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("request_token_hash", sa.String(64), nullable=True),
    sa.Column("instance_id", sa.String(64), nullable=True),
    sa.Column("refresh_interval_s", sa.BigInteger, nullable=True),
    sa.Column("refresh_time", sa.BigInteger, nullable=True),  # epoch milliseconds
    sa.Column("next_renewal_at", UTCDateTime, nullable=True),
    sa.Column("renewals", sa.Integer, nullable=False),
    # Who renews the tokens once PROVISIONED: "engine" or "platform" (migration 0007, DESIGN §7).
    sa.Column("renewal_owner", sa.String(16), nullable=True),
    # When the current renewal first failed (NULL while renewals succeed): the renewal budget
    # counts from here, not from the due time (issue 16 item 4, migration 0008).
    sa.Column("renewal_failing_since", UTCDateTime, nullable=True),
    sa.Column("secrets", sa.LargeBinary, nullable=True),  # encrypted JSON (engine.security.crypto)
    # The applied callback's parameters (verifier, realm...), encrypted; apart from ``secrets`` so
    # that applying a callback needs no read of the row (migration 0003, engine.core.callbacks).
    sa.Column("callback_secrets", sa.LargeBinary, nullable=True),
    # Issue 10/12 (migration 0006): the application's customer id, the last health check, and the
    # SHA-256 of the pending connect link's token (cleared when the link is used).
    sa.Column("customer", sa.String(200), nullable=True),
    sa.Column("last_check_at", UTCDateTime, nullable=True),
    sa.Column("health", sa.String(16), nullable=True),
    sa.Column("health_reason", sa.String(200), nullable=True),
    sa.Column("connect_token_hash", sa.String(64), nullable=True),
    sa.Column("replaces", sa.String(36), nullable=True),  # the attempt --replace retires
    # The provider account the callback named (QuickBooks realmId; not a secret), migration 0010.
    sa.Column("realm_id", sa.String(64), nullable=True),
    # "What is due now" is a range scan on this partial index (issue 3/6 asserts the plan).
    sa.Index(
        "ix_attempts_due",
        "next_run_at",
        sqlite_where=sa.text("next_run_at IS NOT NULL"),
        postgresql_where=sa.text("next_run_at IS NOT NULL"),
    ),
    sa.Index("ix_attempts_state_created", "state", "created_at"),
    sa.Index("ix_attempts_element_created", "element_key", "created_at"),
    sa.Index("ix_attempts_customer_element", "customer", "element_key"),
    sa.Index("ix_attempts_connect_token_hash", "connect_token_hash", unique=True),
    sa.Index("ix_attempts_realm", "element_key", "realm_id", sqlite_where=sa.text("realm_id IS NOT NULL"),
             postgresql_where=sa.text("realm_id IS NOT NULL")),
    sa.Index("ix_attempts_replaces", "replaces", sqlite_where=sa.text("replaces IS NOT NULL"),
             postgresql_where=sa.text("replaces IS NOT NULL")),
    # Free space in each page, so that claims and reschedules are heap-only updates (migration 0002).
    postgresql_with={"fillfactor": 70},
)
# The console's keyset order, newest first (migration 0011, persistence.attempt_filter.page_query).
sa.Index("ix_attempts_created_id", attempts.c.created_at.desc(), attempts.c.id)

history = sa.Table(
    "history",
    metadata,
    sa.Column("attempt_id", sa.String(36), sa.ForeignKey("attempts.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
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
    # Renewal rows by attempt: what history retention reads (persistence.retention, migration 0004).
    sa.Index(
        "ix_history_renewals",
        "attempt_id",
        "outcome",
        "at",
        sqlite_where=sa.text("\"trigger\" = 'renew'"),
        postgresql_where=sa.text("\"trigger\" = 'renew'"),
    ),
)

callbacks = sa.Table(
    "callbacks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("attempt_id", sa.String(36), nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("params", sa.LargeBinary, nullable=True),  # encrypted JSON of the query parameters
    sa.Column("digest", sa.String(64), nullable=True),  # keyed hash, to recognise exact repeats
    sa.Column("status", sa.String(16), nullable=False),  # applied | duplicate | rejected | pending
    sa.Column("reason", sa.String(300), nullable=True),
    sa.Index("ix_callbacks_attempt", "attempt_id", "status"),
)

# --- events outbox (issue 10/12, migration 0004; persistence.outbox reads and writes it) ---------
# One row per history row, inserted by a database trigger in the transaction that wrote the
# history row, whatever code path wrote it. ``seq`` numbers the rows in the order they were written;
# ``position`` is the feed's cursor (migration 0012: on SQLite set with the row, on PostgreSQL by
# ``Outbox.position_new`` after the commit); the other columns are the webhook delivery state
# (pending | delivered | dead), leased like attempts.
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("attempt_id", sa.String(36), nullable=False),
    sa.Column("history_seq", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("worker", sa.String(100), nullable=True),
    sa.Column("instance_id", sa.String(64), nullable=True),  # the attempt's, when the event was written
    sa.Column("delivery", sa.String(12), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False),
    sa.Column("next_try_at", UTCDateTime, nullable=True),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True),
    sa.Index("ix_events_attempt_history", "attempt_id", "history_seq"),
    sa.Index("ux_events_position", "position", unique=True),
    sa.Index("ix_events_unpositioned", "seq", sqlite_where=sa.text("position IS NULL"),
             postgresql_where=sa.text("position IS NULL")),
    sa.Index("ix_events_worker_position", "worker", "position"),
    sa.Index(
        "ix_events_pending",
        "next_try_at",
        sqlite_where=sa.text("delivery = 'pending'"),
        postgresql_where=sa.text("delivery = 'pending'"),
    ),
    sqlite_autoincrement=True,  # a seq is never handed out twice, even after rows are deleted
)

# --- worker heartbeats (issue 16 item 2, migration 0009; persistence.workers reads and writes it) --
# One row per running engine, upserted every few seconds on the database's clock. ``key_ids`` is
# the comma-separated ids of the encryption keys it holds, the one it writes with first.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(100), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_tick_at", UTCDateTime, nullable=False),
    sa.Column("key_ids", sa.String(200), nullable=False),
    sa.Column("leases", sa.Integer, nullable=False),
)

# --- realm claims (issue 10/12 must-have 3, migration 0010; persistence.realms reads and writes it) --
# Which attempt holds each provider account (element, realmId). The primary key is what makes the
# callback-time duplicate guard race-safe: of two workers claiming one realm, one insert wins.
realm_claims = sa.Table(
    "realm_claims",
    metadata,
    sa.Column("element_key", sa.String(100), primary_key=True),
    sa.Column("realm_id", sa.String(64), primary_key=True),
    sa.Column("attempt_id", sa.String(36), nullable=False),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
)

# --- one-off data steps a migration cannot do (issue 17, migration 0011; persistence.backfills) ----
# A row per pending step, deleted when the step is done: ``realm_ids`` copies the realmId of
# attempts made before migration 0010 out of their encrypted secrets (engine.core.realm_backfill).
backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("after_created_at", UTCDateTime, nullable=True),
    sa.Column("after_id", sa.String(36), nullable=True),
    sa.Column("scanned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("skipped", sa.JSON, nullable=False),
)

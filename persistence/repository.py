"""The repository: every read and write of attempts, history and callbacks (DESIGN §3, §4).

Writes that move an attempt are compare-and-set UPDATEs guarded by ``version`` (and the lease
owner when a worker holds one), committed in the same transaction as the history INSERT; a
rowcount of 0 means someone else moved the attempt first and nothing is written.
"""
from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any

import sqlalchemy as sa

from persistence.attempt_filter import AttemptFilter, count_query, page_query
from persistence.claims import claim_params, parameterised_claim
from persistence.codec import ReloadableCodec
from persistence.columns import UTCDateTime
from persistence.customer_guard import check_customers
from persistence.inbox import Inbox
from persistence.lifecycle import Lifecycle
from persistence.quarantine import QUARANTINE_ERROR, UNREADABLE, opens, quarantine, quarantined_rows, release
from persistence.realms import Realms
from persistence.schema import attempts, history
from persistence.statements import (
    ATTEMPT_COLUMNS,
    GET,
    INSERT_ATTEMPT,
    INSERT_CALLBACK,
    INSERT_HISTORY,
    INSERT_ONE_ATTEMPT,
    UPDATE_CALLBACK,
    guarded_params,
    guarded_update,
    transition_statement,
)
from persistence.writes import Write
from states.attempt import Attempt, HistoryEntry
from states.model import Flow, State

__all__ = ["UNREADABLE", "Repository"]

log = logging.getLogger(__name__)


def _update_for(key: tuple[frozenset[str], bool, bool]) -> Any:
    """The prepared guarded UPDATE for a ``Write.statement_key``."""
    keys, leased, count_failure = key
    return guarded_update(keys, leased=leased, count_failure=count_failure)


class Repository(Inbox, Lifecycle, Realms):
    """SQLAlchemy Core access for one database; safe to share between threads."""

    # --- reads -----------------------------------------------------------------------------------

    def _to_attempt(self, row: Any) -> Attempt:  # a RowMapping
        data = {k: row[k] for k in ATTEMPT_COLUMNS}
        data["state"] = State(data["state"])
        data["flow"] = Flow(data["flow"])
        data["tags"] = tuple(data["tags"] or ())
        blob = row.get("secrets")
        data["secrets"] = self.codec.open(blob) if blob else {}
        callback = row.get("callback_secrets")
        if callback:  # rows from before migration 0003 keep "callback" inside secrets
            data["secrets"]["callback"] = self.codec.open(callback)
        return Attempt(**data)

    def _to_view(self, row: Any) -> Attempt:
        """``_to_attempt`` for display: a row whose secrets cannot be opened comes without them,
        marked ``unreadable_secrets``, so one bad row never fails a whole listing."""
        try:
            return self._to_attempt(row)
        except Exception:  # noqa: BLE001 - the codec raises its own error type; any failure is shown
            view = dict(row)
            view["secrets"] = view["callback_secrets"] = None
            attempt = self._to_attempt(view)
            attempt.last_error = dict(QUARANTINE_ERROR)
            return attempt

    def get(self, attempt_id: str, *, lenient: bool = False) -> Attempt | None:
        """The attempt with ``attempt_id``, or None; ``lenient``: unreadable secrets are left out
        (and the attempt is marked ``unreadable_secrets``) instead of raising."""
        with self._read() as conn:
            row = conn.execute(GET, {"g_id": attempt_id}).mappings().first()
        if not row:
            return None
        return self._to_view(row) if lenient else self._to_attempt(row)

    def ids_with_prefix(self, prefix: str, limit: int) -> builtins.list[str]:
        """Up to ``limit`` attempt ids that start with ``prefix`` (LIKE-escaped), in id order."""
        query = (sa.select(attempts.c.id).where(attempts.c.id.startswith(prefix, autoescape=True))
                 .order_by(attempts.c.id).limit(limit))
        with self._read() as conn:
            return [row[0] for row in conn.execute(query)]

    def get_by_idempotency_key(self, key: str) -> Attempt | None:
        """The attempt created with the caller's idempotency ``key``, or None."""
        return self.attempts_by_idempotency_keys([key]).get(key)

    def list(
        self,
        *,
        state: State | None = None,
        element: str | None = None,
        customer: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        reason: str | None = None,
    ) -> builtins.list[Attempt]:
        """Attempts, newest first, filtered by state, element, customer, failure reason and creation time."""
        q = sa.select(attempts).order_by(attempts.c.created_at.desc(), attempts.c.id)
        if state is not None:
            q = q.where(attempts.c.state == state.value)
        if element is not None:
            q = q.where(attempts.c.element_key == element)
        if customer is not None:
            q = q.where(attempts.c.customer == customer)
        if reason is not None:
            q = q.where(attempts.c.failure_reason == reason)
        if created_after is not None:
            q = q.where(attempts.c.created_at >= created_after)
        if created_before is not None:
            q = q.where(attempts.c.created_at < created_before)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._to_view(r) for r in conn.execute(q).mappings()]

    def find(self, f: AttemptFilter, *, after: tuple[datetime, str] | None = None,
             limit: int = 50) -> builtins.list[Attempt]:
        """The page of ``f`` after the keyset cursor ``after`` (``persistence.attempt_filter``)."""
        with self._read() as conn:
            return [self._to_view(r) for r in conn.execute(page_query(f, after, limit)).mappings()]

    def count(self, f: AttemptFilter) -> int:
        """How many attempts ``f`` selects."""
        with self._read() as conn:
            return int(conn.execute(count_query(f)).scalar_one())

    def attempts_of_customer(self, customer: str, element: str) -> builtins.list[Attempt]:
        """The customer's attempts for ``element``, newest first (index ``ix_attempts_customer_element``)."""
        q = (sa.select(attempts).where(attempts.c.customer == customer, attempts.c.element_key == element)
             .order_by(attempts.c.created_at.desc()))
        with self._read() as conn:
            return [self._to_attempt(r) for r in conn.execute(q).mappings()]

    def counts_by_state(self) -> dict[str, int]:
        """How many attempts are in each state (states with none are omitted)."""
        q = sa.select(attempts.c.state, sa.func.count()).group_by(attempts.c.state)
        with self._read() as conn:
            return {s: n for s, n in conn.execute(q)}

    def history(self, attempt_id: str) -> builtins.list[HistoryEntry]:
        """Every transition the attempt took, in order."""
        q = sa.select(history).where(history.c.attempt_id == attempt_id).order_by(history.c.seq)
        with self._read() as conn:
            return [HistoryEntry(**dict(r)) for r in conn.execute(q).mappings()]

    def database_time(self) -> datetime:
        """The database server's clock, UTC (PostgreSQL ``clock_timestamp()``; SQLite: the host's,
        to the millisecond). Leases and due times are compared on it (engine.clock.DatabaseClock)."""
        if self.engine.dialect.name == "postgresql":
            q = sa.text("SELECT extract(epoch FROM clock_timestamp())")
        else:
            q = sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")
        with self._read() as conn:
            epoch = float(conn.execute(q).scalar_one())
        return datetime.fromtimestamp(epoch, timezone.utc)

    def next_due_at(self, now: datetime | None = None) -> datetime | None:
        """The earliest ``next_run_at``; with ``now``, only among attempts this worker could claim.

        The worker passes ``now``: work leased by another worker must not count as due, or an idle
        worker would spin until that lease ends (it notices expired leases within its poll cap).
        """
        q = sa.select(sa.func.min(attempts.c.next_run_at)).where(attempts.c.next_run_at.is_not(None))
        if now is not None:
            q = q.where(sa.or_(attempts.c.lease_expires_at.is_(None), attempts.c.lease_expires_at <= now))
        with self._read() as conn:
            value = conn.execute(q).scalar()
        return UTCDateTime().process_result_value(value, self.engine.dialect) if value else None

    # --- writes ----------------------------------------------------------------------------------

    def insert_attempt(self, attempt: Attempt) -> tuple[Attempt, bool]:
        """Insert a NEW attempt; with an idempotency key already used, return the existing one.

        Returns ``(attempt, created)``.
        """
        try:
            with self._write_one() as conn:
                # Prepared: through Connection.execute the INSERT's compilation and parameter
                # processing cost about a fifth of Engine.start's CPU (bench/README.md).
                self.prepared(INSERT_ONE_ATTEMPT).execute(conn, self._insert_values(attempt))
        except sa.exc.IntegrityError:
            if attempt.idempotency_key is None:
                raise
            existing = self.get_by_idempotency_key(attempt.idempotency_key)
            if existing is None:
                raise
            return existing, False
        return attempt, True

    def insert_attempts(self, batch: Sequence[Attempt]) -> bool:
        """Insert NEW attempts in ONE transaction; False, with nothing stored, if a key is taken.

        Used by ``Engine.start_many``, which looks the idempotency keys up first; False means
        another caller took one of them meanwhile (the unique constraint refused the insert).
        Raises ``CustomersHeldError``, with nothing stored, when a customer of the batch has a
        live attempt for the element (``persistence.customer_guard``).
        """
        if not batch:
            return True
        rows = [self._insert_values(a) for a in batch]
        try:
            with self._write() as conn:
                check_customers(conn, batch)
                conn.execute(INSERT_ATTEMPT, rows)  # executemany (multi-row VALUES)
        except sa.exc.IntegrityError:
            if all(a.idempotency_key is None for a in batch):
                raise  # not a key collision: a real fault
            return False
        return True

    def attempts_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Attempt]:
        """The stored attempts among ``keys``, by key."""
        found = self._attempts_in(attempts.c.idempotency_key, keys)
        return {a.idempotency_key: a for a in found if a.idempotency_key is not None}

    def get_many(self, ids: Sequence[str], *, lenient: bool = False) -> dict[str, Attempt]:
        """The stored attempts among ``ids``, by id: one query where ``get`` would make one each
        (``lenient`` as for ``get``)."""
        return {a.id: a for a in self._attempts_in(attempts.c.id, ids, lenient=lenient)}

    def _attempts_in(self, column: sa.Column[Any], values: Sequence[str], *,
                     lenient: bool = False) -> builtins.list[Attempt]:
        found: builtins.list[Attempt] = []
        convert = self._to_view if lenient else self._to_attempt
        with self._read() as conn:
            # 500 per query: SQLite before 3.32 allows at most 999 bound parameters per statement.
            for i in range(0, len(values), 500):
                rows = conn.execute(sa.select(attempts).where(column.in_(values[i:i + 500]))).mappings()
                found.extend(convert(r) for r in rows)
        return found

    def _insert_values(self, attempt: Attempt) -> dict[str, Any]:
        values = {k: getattr(attempt, k) for k in ATTEMPT_COLUMNS}
        values["state"] = attempt.state.value
        values["flow"] = attempt.flow.value
        values["tags"] = list(attempt.tags)
        values["secrets"] = self.codec.seal(attempt.secrets)
        return values

    def claim_due(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> builtins.list[Attempt]:
        """Atomically lease up to ``limit`` due attempts whose lease is free or expired."""
        stmt = parameterised_claim(self.dialect)
        with self._write_one() as conn:
            rows = conn.execute(stmt, claim_params(now, owner, lease_until, limit)).mappings().all()
        claimed, failed = self._open_rows(rows)
        if failed and self._reload_keys():
            # A row sealed under a key published since this process loaded its keys (a rotation in
            # progress, ``provision keys rotate``): read the key file again before judging the row.
            again, failed = self._open_rows(failed)
            claimed += again
        unreadable = [row["id"] for row in failed]
        if unreadable:
            with self._write() as conn:
                quarantine(conn, unreadable, owner, now)
            log.error("quarantined %d attempt(s) whose secrets cannot be decrypted: %s (%s)",
                      len(unreadable), ", ".join(unreadable), UNREADABLE)
        claimed.sort(key=lambda a: (a.next_run_at or now, a.id))
        return claimed

    def _open_rows(self, rows: Sequence[Any]) -> tuple[builtins.list[Attempt], builtins.list[Any]]:
        """The rows as attempts, and the rows whose secrets could not be opened."""
        opened, failed = [], []
        for row in rows:
            try:
                opened.append(self._to_attempt(row))
            except Exception:  # noqa: BLE001 - one bad row must not fail (and keep claimed) the batch
                failed.append(row)
        return opened, failed

    def _reload_keys(self) -> bool:
        """Reload the codec's keys if it can (a key file that changed); True when they changed."""
        return isinstance(self.codec, ReloadableCodec) and self.codec.reload()

    def release_quarantined(self, now: datetime) -> int:
        """Make every quarantined attempt that the configured key now opens due again (worker start)."""
        with self._read() as conn:
            rows = quarantined_rows(conn)
        if not rows:
            return 0
        with self._write() as conn:
            return release(conn, rows, partial(opens, self.codec), now)

    def _row_values(self, write: Write) -> dict[str, Any]:
        """``write``'s column values with its secrets sealed (the one place a step's secrets are sealed)."""
        values = write.values
        if write.secret_updates is None and write.callback_secrets is None:
            return values
        values = dict(values)
        if write.secret_updates is not None:
            values["secrets"] = self.codec.seal(write.merged_secrets())
        if write.callback_secrets is not None:
            values["callback_secrets"] = self.codec.seal(write.callback_secrets)
        return values

    def apply(self, write: Write, *, revive: bool = False) -> bool:
        """Commit one ``Write`` (with its inbox rows) in its own transaction; False if its guard failed.

        The guard is compare-and-set on ``version`` and state (and the lease owner when the write
        has one): False means someone else moved the attempt first, and nothing was written.
        ``revive``: the write makes a FAILED attempt live again (restart, reauthorize), so the
        customer guard runs in its transaction (``CustomersHeldError``, nothing written).
        """
        params = guarded_params(write.attempt, write.owner, self._row_values(write))
        revive = revive and write.attempt.customer is not None
        if not write.entries and not revive:
            with self._write_one() as conn:
                return bool(conn.execute(_update_for(write.statement_key), params).rowcount == 1)
        if self._pg and not write.callback_updates and len(write.entries) == 1 and not revive:
            # PostgreSQL: guarded UPDATE + INSERTs as one autocommit statement (one round trip).
            stmt = transition_statement(write.columns, leased=write.owner is not None,
                                        with_callback=write.callback is not None)
            for k, v in write.entries[0].__dict__.items():
                params["h_" + k] = v
            if write.callback is not None:
                for k, v in self._callback_values(write.callback).items():
                    params["cb_" + k] = v
            with self._write_one() as conn:
                return len(conn.execute(stmt, params).all()) == 1
        with self._write() as conn:
            if revive:
                check_customers(conn, [write.attempt])
            if conn.execute(_update_for(write.statement_key), params).rowcount != 1:
                conn.rollback()
                return False
            conn.execute(INSERT_HISTORY, [e.__dict__ for e in write.entries])
            if write.callback is not None:
                conn.execute(INSERT_CALLBACK, self._callback_values(write.callback))
            for cb_id, status, reason in write.callback_updates:
                conn.execute(UPDATE_CALLBACK, {"g_cb_id": cb_id, "v_status": status, "v_reason": reason})
        return True

    def apply_many(self, writes: Sequence[Write]) -> builtins.list[bool]:
        """Commit several ``Write``s of different attempts in ONE transaction; one flag per write.

        The worker's group commit: each distinct UPDATE runs once with many parameter sets (an
        executemany, pipelined by psycopg) and the history rows go in one INSERT, so a group of
        steps costs one commit instead of one each. The guards are all-or-nothing here: when any
        write's guard fails (a lost lease, rare) the transaction is rolled back and every write is
        applied on its own, which tells exactly which ones were lost. Writes with inbox rows, and
        groups naming an attempt twice, are applied one by one.
        """
        if (len(writes) <= 1 or len({w.attempt.id for w in writes}) != len(writes)
                or any(w.callback is not None or w.callback_updates for w in writes)):
            return [self.apply(w) for w in writes]
        groups: dict[tuple[frozenset[str], bool, bool], builtins.list[Write]] = {}
        for w in writes:
            groups.setdefault(w.statement_key, []).append(w)
        with self._write() as conn:
            for key, members in groups.items():
                params = [guarded_params(w.attempt, w.owner, self._row_values(w)) for w in members]
                if conn.execute(_update_for(key), params).rowcount != len(members):
                    conn.rollback()
                    break
            else:
                entries = [e.__dict__ for w in writes for e in w.entries]
                if entries:
                    conn.execute(INSERT_HISTORY, entries)
                return [True] * len(writes)
        return [self.apply(w) for w in writes]

    def merge_secrets(self, attempt_id: str, updates: dict[str, Any], *, now: datetime) -> bool:
        """Merge ``updates`` into the stored secrets whatever the lease (compare-and-set loop).

        The last resort for a rotated token whose transition was discarded because the lease was
        lost: the provider already invalidated the old token, so the new one must be kept.
        """
        for _ in range(10):
            current = self.get(attempt_id)
            if current is None:
                return False
            merged = {**current.secrets, **updates}
            with self._write() as conn:
                result = conn.execute(
                    attempts.update()
                    .where(attempts.c.id == attempt_id, attempts.c.version == current.version)
                    .values(secrets=self.codec.seal(merged), version=current.version + 1, updated_at=now)
                )
            if result.rowcount == 1:
                return True
        return False

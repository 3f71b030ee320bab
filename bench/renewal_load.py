"""Loading for ``bench/renewals.py``: N provisioned OAuth2 connections written straight into the tables.

Not through the API: ``Engine.start`` and four steps per connection would take longer than the
measurement. Rows are what the provisioning step leaves behind (``states/handlers.py``): state
PROVISIONED, an instance id, an hourly refresh interval and secrets (the app's client id and
secret, the user's access and refresh tokens) sealed with the engine's own codec, so the workers
read them as they read any other row. PostgreSQL gets them by COPY, SQLite by one executemany.

Due times are loaded far in the future and then shifted to the real start in one UPDATE (``arm``),
so that loading a million rows, however long it takes, cannot make the first ones late.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from engine.security.crypto import FernetCodec, parse_keys
from persistence.schema import attempts, history

FAR = datetime(2100, 1, 1, tzinfo=timezone.utc)  # where due times wait until ``arm``
INTERVAL_S = 3600  # QuickBooks OAuth2 access tokens live one hour
CHUNK = 10_000
COLUMNS = [c.name for c in attempts.columns]
DUE_TABLE = "bench_due"
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's fixed-width text form of a DateTime on SQLite


def attempt_id(i: int) -> str:
    """The id of connection ``i`` (sortable, so keyset scans follow the load order)."""
    return f"renewal-{i:09d}"


def _secrets(i: int) -> dict[str, Any]:
    return {"config": {"oauth.api.key": "bench-client-id", "oauth.api.secret": "bench-client-secret"},
            "instance_token": f"it-{i:09d}", "push_pending": False,
            "user_tokens": {"oauth.user.token": f"at-{i:09d}", "oauth.user.refresh_token": f"rt-{i:09d}"}}


def _rows(first: int, count: int, n: int, spread_s: float, keys: str, now: datetime) -> list[tuple[Any, ...]]:
    """Rows ``first .. first+count`` as tuples in ``COLUMNS`` order (naive UTC times, as stored).

    Columns this function does not name (added by later migrations: health, realm, replaces...) get
    what an INSERT leaving them out would store, so a new nullable column does not break the loader.
    """
    codec = FernetCodec(parse_keys(keys))
    naive_now = now.astimezone(timezone.utc).replace(tzinfo=None)
    now_ms = int(now.timestamp() * 1000)
    out = []
    for i in range(first, first + count):
        due = (FAR + timedelta(seconds=spread_s * i / n)).replace(tzinfo=None)
        values = {
            "id": attempt_id(i), "idempotency_key": None, "element_key": "quickbooks", "flow": "oauth2",
            "name": f"company {i}", "tags": "[]", "state": "PROVISIONED", "version": 5, "history_seq": 4,
            "runs": 0, "created_at": naive_now, "updated_at": naive_now, "next_run_at": due,
            "deadline_at": None, "callback_wait_s": None, "failures": 0, "last_error": None,
            "failure_reason": None, "lease_owner": None, "lease_expires_at": None, "state_nonce_hash": None,
            "request_token_hash": None, "instance_id": str(1_000_000 + i), "refresh_interval_s": INTERVAL_S,
            "refresh_time": now_ms, "next_renewal_at": due, "renewals": 0, "renewal_owner": "engine",
            "secrets": codec.seal(_secrets(i)), "callback_secrets": None,
        }
        out.append(tuple(values[c] if c in values else _default(c) for c in COLUMNS))
    return out


def _default(name: str) -> Any:
    """What an INSERT that leaves column ``name`` out would store: its scalar default, else NULL."""
    column = attempts.c[name]
    default = column.default
    if default is not None and getattr(default, "is_scalar", False):
        return getattr(default, "arg", None)
    if not column.nullable and column.server_default is None:
        raise RuntimeError(f"bench/renewal_load.py must set attempts.{name} (NOT NULL, no default)")
    return None


def _chunks(n: int, spread_s: float, keys: str, now: datetime,
            processes: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows in chunks of ``CHUNK``, sealed by ``processes`` processes (Fernet is most of the cost)."""
    starts = range(0, n, CHUNK)
    args = [(s, min(CHUNK, n - s), n, spread_s, keys, now) for s in starts]
    if processes <= 1 or n <= CHUNK:
        yield from (_rows(*a) for a in args)
        return
    with ProcessPoolExecutor(processes) as pool:
        yield from pool.map(_rows, *zip(*args, strict=True))


def load(engine: sa.Engine, n: int, spread_s: float, keys: str, now: datetime,
         processes: int = os.cpu_count() or 1) -> None:
    """Insert ``n`` PROVISIONED OAuth2 connections due over ``spread_s`` seconds after ``FAR``."""
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                with cur.copy(f"COPY attempts ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for chunk in _chunks(n, spread_s, keys, now, processes):
                        for row in chunk:
                            copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    with engine.begin() as conn:
        for chunk in _chunks(n, spread_s, keys, now, processes):
            conn.exec_driver_sql(
                f"INSERT INTO attempts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [tuple(v.strftime(SQLITE_TIME) if isinstance(v, datetime) else v for v in row)
                 for row in chunk])


def arm(engine: sa.Engine, t0: datetime) -> None:
    """Make the loaded due times real (``FAR`` becomes ``t0``) and record them in ``bench_due``."""
    shift = FAR - t0
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {DUE_TABLE}")
        conn.exec_driver_sql(f"CREATE TABLE {DUE_TABLE} (attempt_id VARCHAR(36) PRIMARY KEY, "
                             "due_at TIMESTAMP)")
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("UPDATE attempts SET next_run_at = next_run_at - :shift, "
                                 "next_renewal_at = next_renewal_at - :shift"), {"shift": shift})
        else:
            due = conn.execute(sa.select(attempts.c.id, attempts.c.next_run_at)).all()
            conn.execute(attempts.update().where(attempts.c.id == sa.bindparam("b_id")).values(
                next_run_at=sa.bindparam("due"), next_renewal_at=sa.bindparam("due")),
                [{"b_id": i, "due": at - shift} for i, at in due])
        conn.exec_driver_sql(f"INSERT INTO {DUE_TABLE} SELECT id, next_run_at FROM attempts")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE attempts")  # the UPDATE left a dead version of each row


def first_renewals(engine: sa.Engine) -> list[tuple[datetime, datetime | None]]:
    """(due, first renewal time or None) per connection, from ``bench_due`` and the history."""
    first = (sa.select(history.c.attempt_id, sa.func.min(history.c.at).label("at"))
             .where(history.c.trigger == "renew").group_by(history.c.attempt_id).subquery())
    due = sa.table(DUE_TABLE, sa.column("attempt_id"), sa.column("due_at", history.c.at.type))
    joined = due.outerjoin(first, first.c.attempt_id == due.c.attempt_id)
    q = sa.select(due.c.due_at, first.c.at).select_from(joined)
    with engine.connect() as conn:
        return [(d, a) for d, a in conn.execute(q)]


def history_sample(engine: sa.Engine, attempts_n: int, days: int, end: datetime) -> None:
    """``days`` days of hourly renewal rows before ``end`` for ``attempts_n`` bare attempts (size probe)."""
    start = end - timedelta(days=days)
    hist = ((attempt_id(i), 4 + h, "renew", "PROVISIONED", "PROVISIONED",
             start + timedelta(hours=h, seconds=i % 3600), 40 + h % 30, "bench-worker-1234abcd", "ok", 1,
             None, "refresh-token grant")
            for i in range(attempts_n) for h in range(days * 24))
    with engine.begin() as conn:
        # By column name: columns it does not name (added by later migrations) get their defaults.
        conn.execute(attempts.insert(), list(_sample_attempts(attempts_n, start)))
        cols = [c.name for c in history.columns]
        batch: list[dict[str, Any]] = []
        for row in hist:
            batch.append(dict(zip(cols, row, strict=True)))
            if len(batch) == CHUNK:
                conn.execute(history.insert(), batch)
                batch = []
        if batch:
            conn.execute(history.insert(), batch)


def _sample_attempts(n: int, at: datetime) -> Sequence[dict[str, Any]]:
    return [{"id": attempt_id(i), "idempotency_key": None, "element_key": "quickbooks", "flow": "oauth2",
             "name": f"company {i}", "tags": [], "state": "PROVISIONED", "version": 5, "history_seq": 4,
             "runs": 0, "created_at": at, "updated_at": at, "next_run_at": None, "deadline_at": None,
             "callback_wait_s": None, "failures": 0, "last_error": None, "failure_reason": None,
             "lease_owner": None, "lease_expires_at": None, "state_nonce_hash": None,
             "request_token_hash": None, "instance_id": str(i), "refresh_interval_s": INTERVAL_S,
             "refresh_time": None, "next_renewal_at": None, "renewals": 0, "renewal_owner": "engine",
             "secrets": None,
             "callback_secrets": None} for i in range(n)]


"""Statements compiled once and sent as driver SQL (persistence.prepared, issue 19).

The callback path sends its statements through ``DriverStatement``: straight to the driver's
cursor when nobody listens to cursor events, through ``exec_driver_sql`` otherwise. Either way the
rows must be those SQLAlchemy's own ``execute`` writes (type processing of times, JSON, bytes),
errors must be SQLAlchemy's exception types, and the connection must stay usable.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import TEST_KEY, listening

from engine.wiring import open_repository
from persistence import Repository
from persistence.prepared import DriverStatement
from persistence.schema import attempts, callbacks, history
from persistence.statements import PENDING_FOR
from states import Attempt, Flow, State

# Not in UTC: the column type (UTCDateTime) converts it, so a skipped type processor shows.
AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
INSERT = callbacks.insert().values(
    {c: sa.bindparam("cb_" + c, type_=callbacks.c[c].type)
     for c in ("id", "attempt_id", "received_at", "params", "digest", "status", "reason")})


@pytest.fixture
def repo(db_url: str) -> Iterator[Repository]:
    r = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    yield r
    r.engine.dispose()


def row(cb_id: int, blob: bytes | None = b"\x00sealed\xff") -> dict[str, Any]:
    return {"cb_id": cb_id, "cb_attempt_id": "a-1", "cb_received_at": AT, "cb_params": blob,
            "cb_digest": "d" * 64, "cb_status": "applied", "cb_reason": None}


def stored(repo: Repository, cb_id: int) -> tuple[Any, ...]:
    with repo.engine.connect() as conn:
        got = conn.execute(sa.select(callbacks).where(callbacks.c.id == cb_id)).one()
    return tuple(got)[1:]  # all but the id


def test_rows_written_either_way_equal_sqlalchemys(repo: Repository) -> None:
    with repo.engine.begin() as conn:
        conn.execute(INSERT, row(1))
    prepared = repo.prepared(INSERT)
    assert repo.prepared(INSERT) is prepared  # compiled once per database
    with repo.engine.begin() as conn:
        assert prepared.execute(conn, row(2)) == []  # the driver path: nobody listens
    seen: list[str] = []
    with listening(repo.engines, before_cursor_execute=lambda *a: seen.append(a[2])):
        with repo.engine.begin() as conn:
            prepared.execute(conn, row(3))  # through exec_driver_sql, so the listener sees it
    assert [s for s in seen if s.lstrip().startswith("INSERT INTO callbacks")] == [prepared.sql]
    assert stored(repo, 1) == stored(repo, 2) == stored(repo, 3)
    assert stored(repo, 2)[1] == AT and stored(repo, 2)[1].hour == 10


def test_values_are_converted_by_their_types(repo: Repository) -> None:
    echo = DriverStatement(sa.select(sa.bindparam("j", type_=sa.JSON)), repo.engine.dialect)
    with repo.engine.connect() as conn:
        [(value,)] = echo.execute(conn, {"j": {"a": [1, None]}})  # a dict the driver cannot bind as is
    assert (json.loads(value) if isinstance(value, str) else value) == {"a": [1, None]}


def test_a_driver_error_is_sqlalchemys_and_the_connection_recovers(repo: Repository) -> None:
    prepared = repo.prepared(INSERT)
    with repo.engine.begin() as conn:
        prepared.execute(conn, row(7))
    with pytest.raises(sa.exc.IntegrityError) as caught:
        with repo.engine.begin() as conn:
            prepared.execute(conn, row(7))  # the same primary key
    assert "d" * 64 not in str(caught.value)  # parameters are not echoed
    with repo.engine.begin() as conn:
        prepared.execute(conn, row(8))
    assert stored(repo, 8) == stored(repo, 7)


def test_missing_values_and_unpreparable_statements_are_refused(repo: Repository) -> None:
    prepared = repo.prepared(INSERT)
    with pytest.raises(KeyError, match="cb_status"):
        prepared.parameters({k: v for k, v in row(9).items() if k != "cb_status"})
    with pytest.raises(ValueError, match="expanding"):
        DriverStatement(PENDING_FOR, repo.engine.dialect)
    fixed = DriverStatement(history.select().where(history.c.seq == 3), repo.engine.dialect)
    with repo.engine.connect() as conn:
        assert fixed.execute(conn, {}) == []  # a bound constant needs no value


def test_whether_rows_come_back_is_known_from_the_statement(repo: Repository) -> None:
    returning = callbacks.update().where(callbacks.c.id == sa.bindparam("g_id")).values(
        status=sa.bindparam("v_status")).returning(callbacks.c.id, callbacks.c.status)
    plain = callbacks.update().where(callbacks.c.id == sa.bindparam("g_id")).values(
        status=sa.bindparam("v_status"))
    dialect = repo.engine.dialect
    yields = [DriverStatement(s, dialect).returns_rows for s in (INSERT, plain, returning)]
    assert yields == [False, False, True]
    assert DriverStatement(sa.select(sa.literal(1)), dialect).returns_rows
    textual = sa.text("UPDATE callbacks SET status = :v_status WHERE id = :g_id")
    assert DriverStatement(textual, dialect).returns_rows is None  # asked of the cursor
    with repo.engine.begin() as conn:
        repo.prepared(INSERT).execute(conn, row(5))
        assert DriverStatement(plain, dialect).execute(conn, {"g_id": 5, "v_status": "pending"}) == []
        assert DriverStatement(returning, dialect).execute(conn, {"g_id": 5, "v_status": "rejected"}) == [
            (5, "rejected")]
        assert DriverStatement(returning, dialect).execute(conn, {"g_id": 6, "v_status": "x"}) == []
        assert DriverStatement(textual, dialect).execute(conn, {"g_id": 5, "v_status": "applied"}) == []
        text_select = sa.text("SELECT status FROM callbacks WHERE id = :g_id")
        assert DriverStatement(text_select, dialect).execute(conn, {"g_id": 5}) == [("applied",)]


def test_a_started_attempt_is_stored_as_sqlalchemys_own_insert_stores_it(repo: Repository) -> None:
    """``insert_attempt`` (``Engine.start`` without a customer) sends a prepared INSERT;
    ``insert_attempts`` (``start_many``, starts with a customer) SQLAlchemy's own. Every column
    must come out the same."""
    def attempt(attempt_id: str, key: str) -> Attempt:
        return Attempt(id=attempt_id, element_key="quickbooks", flow=Flow.OAUTH2, name="Acme Ltd",
                       state=State.NEW, version=1, created_at=AT, updated_at=AT, next_run_at=AT,
                       tags=("a", "b"), idempotency_key=key, customer="cust-7", deadline_at=AT,
                       secrets={"config": {"oauth.api.secret": "planted"}})

    # SQLAlchemy's first: its transaction runs the customer guard, which would refuse a second
    # live attempt of ``cust-7``; the prepared INSERT (starts without a customer) has none.
    assert repo.insert_attempts([attempt("a-sqlalchemy", "k-2")])
    repo.insert_attempt(attempt("a-prepared", "k-1"))
    with repo.engine.connect() as conn:
        rows = {r.id: r._asdict() for r in conn.execute(sa.select(attempts))}
    prepared, own = rows["a-prepared"], rows["a-sqlalchemy"]
    for row in (prepared, own):
        del row["id"], row["idempotency_key"], row["secrets"]  # secrets: a fresh IV each time
    assert prepared == own
    assert prepared["created_at"] == AT and prepared["tags"] == own["tags"]
    got = repo.get("a-prepared")
    assert got is not None and got.secrets == {"config": {"oauth.api.secret": "planted"}}
    assert got.tags == ("a", "b") and got.deadline_at == AT


@pytest.mark.postgres
def test_the_autocommit_pool_skips_the_rollback_on_return_and_stays_usable(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its connections go back without a rollback (none can be needed in autocommit): one whose
    statement failed is handed out again, and works."""
    repo = open_repository(pg_schema_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        auto = repo.engines[-1]
        prepared = repo.prepared(INSERT)

        def backend(conn: sa.Connection) -> int:
            return int(conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]

        with auto.connect() as conn:  # connected (SQLAlchemy's first connect rolls back once)
            pid = backend(conn)
        rollbacks: list[object] = []
        rollback = auto.dialect.do_rollback

        def observed(dbapi_conn: Any) -> None:  # counted, still done
            rollbacks.append(dbapi_conn)
            rollback(dbapi_conn)

        monkeypatch.setattr(auto.dialect, "do_rollback", observed)
        with auto.connect() as conn:
            prepared.execute(conn, row(21))
        with pytest.raises(sa.exc.IntegrityError):
            with auto.connect() as conn:
                prepared.execute(conn, row(21))  # the same key: fails, no transaction left open
        with auto.connect() as conn:
            assert backend(conn) == pid  # the same connection, handed out again
            prepared.execute(conn, row(22))
        assert rollbacks == []
        assert stored(repo, 22) == stored(repo, 21)
    finally:
        repo.engine.dispose()


@pytest.mark.postgres
def test_a_lost_connection_is_invalidated_and_the_next_call_reconnects(pg_schema_url: str) -> None:
    repo = open_repository(pg_schema_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    admin = sa.create_engine(sa.make_url(pg_schema_url).set(query={}), isolation_level="AUTOCOMMIT")
    try:
        prepared = repo.prepared(INSERT)
        auto = repo.engines[-1]  # the autocommit pool the callback statement runs on
        with auto.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as conn:  # as a database restart would
            conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as caught:
            with auto.connect() as conn:  # the pool hands back the same, now dead, connection
                prepared.execute(conn, row(11))
        assert caught.value.connection_invalidated
        with auto.connect() as conn:
            prepared.execute(conn, row(11))
        assert stored(repo, 11)[2] == b"\x00sealed\xff"
    finally:
        admin.dispose()
        repo.engine.dispose()

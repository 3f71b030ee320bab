"""Applying a callback without reading the attempt first (issue 6/6, migration 0003).

A complete callback for a REDIRECTED attempt is applied by one guarded write; its parameters go
encrypted to ``callback_secrets``; anything the guard does not match falls back to reading the
attempt (the rejection reasons are tested in test_e2e_callbacks.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from testkit import QBO, consent, listening

from engine import Engine
from persistence.schema import attempts, callbacks
from states import State


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` sends, first words only."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()[:3]))

    with listening(engine.repo.engines, before_cursor_execute=on_execute):
        yield seen


def raw_row(engine: Engine, attempt_id: str) -> Any:
    with engine.repo.engine.connect() as conn:
        return conn.execute(sa.select(attempts).where(attempts.c.id == attempt_id)).mappings().one()


def redirected(engine: Engine, flow: str) -> tuple[Any, str]:
    a = engine.start("quickbooks", "At once", flow=flow, **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.REDIRECTED
    return a, consent(engine.redirect_url(a) or "")


def test_a_complete_callback_is_one_write_without_a_read(make_engine: Callable[..., Engine]) -> None:
    for flow in ("oauth1", "oauth2"):
        engine = make_engine()
        a, location = redirected(engine, flow)
        blob_before = raw_row(engine, a.id)["secrets"]
        with statements(engine) as sent:
            outcome = engine.handle_callback(location)
        assert (outcome.status, outcome.state) == ("applied", State.CALLBACK_RECEIVED)
        assert not [s for s in sent if s.startswith("SELECT")]  # no read of the attempt
        assert len([s for s in sent if s.startswith(("UPDATE attempts", "WITH moved"))]) == 1
        row = raw_row(engine, a.id)
        assert row["secrets"] == blob_before  # the secrets blob is neither read nor rewritten
        params = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))
        assert params["state"].encode() not in row["callback_secrets"]  # stored encrypted
        got = engine.get(a.id)
        assert (got.state, got.version, got.history_seq, got.runs) == (State.CALLBACK_RECEIVED, a.version + 1,
                                                                       a.history_seq + 1, 0)
        assert got.next_run_at == got.updated_at and got.lease_owner is None and got.last_error is None
        assert got.secrets["callback"]["state"] and got.secrets["redirect_url"]  # both columns read
        last = engine.history(a.id)[-1]
        assert (last.seq, last.trigger, last.source, last.dest, last.note) == (
            a.history_seq + 1, "receive_callback", "REDIRECTED", "CALLBACK_RECEIVED", "callback")
        [inbox] = engine.repo.callbacks(a.id)
        assert inbox.status == "applied" and inbox.digest
        engine.run_until_idle()
        assert engine.get(a.id).state is State.PROVISIONED  # the create step found the parameters


def test_a_callback_the_guard_does_not_match_is_read_and_judged(make_engine: Callable[..., Engine],
                                                                 clock: Any) -> None:
    engine = make_engine(clock=clock)
    a, location = redirected(engine, "oauth1")
    clock.advance(days=2)  # past the deadline: the guard fails, the slow path says why
    with statements(engine) as sent:
        try:
            engine.handle_callback(location)
        except Exception as exc:  # noqa: BLE001 - the reason is what this test checks
            assert "deadline" in str(exc)
        else:
            raise AssertionError("a late callback was applied")
    assert [s for s in sent if s.startswith("SELECT")]  # the fallback read the attempt
    assert engine.get(a.id).state is State.REDIRECTED and raw_row(engine, a.id)["callback_secrets"] is None


def test_rows_from_before_migration_0003_keep_their_callback_in_secrets(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine, "oauth1")
    engine.handle_callback(location)
    got = engine.get(a.id)
    old_style = {**got.secrets}  # an attempt written before 0003: parameters inside the secrets blob
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == a.id).values(
            secrets=engine.repo.codec.seal(old_style), callback_secrets=None))
    assert engine.get(a.id).secrets["callback"] == got.secrets["callback"]
    engine.run_until_idle()
    assert engine.get(a.id).state is State.PROVISIONED


def test_inbox_and_column_hold_the_same_parameters(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, location = redirected(engine, "oauth1")
    engine.handle_callback(location)
    with engine.repo.engine.connect() as conn:
        query = sa.select(callbacks.c.params).where(callbacks.c.attempt_id == a.id)
        sealed = conn.execute(query).scalar_one()
    assert engine.repo.codec.open(sealed) == engine.get(a.id).secrets["callback"]
    assert bytes(sealed) == bytes(raw_row(engine, a.id)["callback_secrets"])  # encrypted once, stored twice

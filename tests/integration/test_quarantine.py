"""No poisoned queue (issue 16 item 3): a row no configured key opens is quarantined, not fatal."""
from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa
from cryptography.fernet import Fernet
from testkit import QUICK_CONFIG, quick_config

from engine import Engine
from engine.cli.output import format_attempt, format_list
from engine.security.crypto import FernetCodec
from persistence.repository import UNREADABLE
from persistence.schema import attempts
from states import Attempt, State


def plant_foreign_row(engine: Engine) -> str:
    """A due quick attempt whose secrets are sealed under a key the engine does not hold."""
    bad = engine.start("quickbooks", "sealed elsewhere", flow="quick", config=quick_config())
    foreign = FernetCodec([Fernet.generate_key()]).seal({"config": quick_config()})
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == bad.id).values(secrets=foreign))
    return bad.id


def test_one_unreadable_row_among_twenty_is_quarantined(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    def start(i: int) -> Attempt:
        return engine.start("quickbooks", f"good {i}", flow="quick", config=quick_config())

    good = [start(i) for i in range(10)]
    bad_id = plant_foreign_row(engine)
    good += [start(i) for i in range(10, 20)]
    engine.run_until_idle()
    assert [engine.get(a.id).state for a in good] == [State.PROVISIONED] * 20
    listed = {a.id: a for a in engine.list()}  # `list` works with the bad row present
    assert len(listed) == 21
    bad = listed[bad_id]
    assert bad.state is State.NEW and bad.last_error and bad.last_error["kind"] == UNREADABLE
    assert bad.next_run_at is None and bad.lease_owner is None  # released, never claimed again
    assert engine.tick().claimed == 0
    shown = format_attempt(engine.get(bad_id), engine.history(bad_id), None)  # `show` says what to do
    assert "needs operator action" in shown and "PROVISION_SECRET_KEY" in shown
    assert UNREADABLE in format_list(engine.list(), engine.counts(), tty=False)


def test_quarantined_row_runs_again_once_the_key_fits(make_engine: Callable[..., Engine]) -> None:
    """The operator's action: restart the worker with a key that opens the row; it is released."""
    engine = make_engine()
    bad_id = plant_foreign_row(engine)
    engine.run_until_idle()
    assert engine.get(bad_id).next_run_at is None
    fixed = QUICK_CONFIG  # reseal under the engine's key, as if the right key were configured
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == bad_id)
                     .values(secrets=engine.repo.codec.seal({"config": fixed})))
    assert engine.run(threading.Event(), once=True) >= 1  # a worker start releases it, then runs it
    after = engine.get(bad_id)
    assert after.state is State.PROVISIONED and after.last_error is None
    with engine.repo.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(attempts)).scalar() == 1

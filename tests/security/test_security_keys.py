"""``provision keys rotate``: every secret re-encrypted under the new key, nothing lost, resumable."""
from __future__ import annotations

import json
import stat
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from testkit import QBO, QUICK_CONFIG, TEST_KEY, consent

from engine import ElementsClient, Engine
from engine.cli.main import main as cli_main
from engine.config import ClientSettings
from engine.errors import CallbackRejectedError
from engine.security import rotation as keys_mod
from engine.security.crypto import FernetCodec
from engine.security.rotation import key_file_for, rotate_keys
from engine.wiring import open_repository
from persistence.database import sqlite_path
from persistence.rekey import Rekeyer, RekeyTally
from persistence.schema import attempts, callbacks
from states import State


def populate(engine: Engine) -> dict[str, dict[str, Any]]:
    """A provisioned attempt, a waiting one and an inbox row with params; returns decrypted secrets by id."""
    quick = engine.start("quickbooks", "quick", flow="quick", config=QUICK_CONFIG)
    waiting = engine.start("quickbooks", "waiting", flow="oauth1", **QBO)
    called = engine.start("quickbooks", "called back", flow="oauth1", **QBO)
    engine.run_until_idle()
    assert engine.get(quick.id).state is State.PROVISIONED
    # An applied callback: its parameters sit in attempts.callback_secrets, rotated too.
    assert (
        engine.handle_callback(consent(engine.redirect_url(engine.get(called.id)) or "")).status == "applied"
    )
    with pytest.raises(CallbackRejectedError):
        engine.handle_callback(f"state={waiting.id}.forged&oauth_token=t&oauth_verifier=v&realmId=1")
    return {a.id: a.secrets for a in engine.list()}


def blobs(url: str) -> tuple[list[bytes], list[bytes]]:
    db = sa.create_engine(url)
    with db.connect() as conn:
        a = [bytes(r[0]) for r in conn.execute(sa.select(attempts.c.secrets)) if r[0]]
        a += [bytes(r[0]) for r in conn.execute(sa.select(attempts.c.callback_secrets)) if r[0]]
        c = [bytes(r[0]) for r in conn.execute(sa.select(callbacks.c.params)) if r[0]]
    db.dispose()
    return a, c


def test_env_rotation_reencrypts_everything_and_is_idempotent(
    db_url: str, engine_on: Callable[..., Engine]
) -> None:
    before = populate(engine_on(db_url))
    new = Fernet.generate_key().decode()
    report = rotate_keys(db_url, environ={"PROVISION_SECRET_KEY": f"{new},{TEST_KEY}"}, batch=1)
    a_blobs, c_blobs = blobs(db_url)
    assert (report.attempts, report.callbacks, report.unreadable) == (len(a_blobs), len(c_blobs), 0)
    assert report.attempts >= 2 and report.callbacks >= 1
    for blob in a_blobs + c_blobs:  # NEW alone opens every row; OLD none
        Fernet(new.encode()).decrypt(blob)
        with pytest.raises(InvalidToken):
            Fernet(TEST_KEY.encode()).decrypt(blob)
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": new})
    assert {a.id: a.secrets for a in repo.list()} == before  # nothing lost
    repo.engine.dispose()
    again = rotate_keys(db_url, environ={"PROVISION_SECRET_KEY": f"{new},{TEST_KEY}"})
    assert (again.attempts, again.callbacks, again.already_current) == (0, 0, len(a_blobs) + len(c_blobs))


def test_rotation_loses_no_concurrent_write(db_url: str, engine_on: Callable[..., Engine]) -> None:
    """A worker rewrites a row between the rotation's read and its UPDATE: the worker's data wins."""
    engine = engine_on(db_url)
    populate(engine)
    new = Fernet.generate_key()
    codec = FernetCodec([new, TEST_KEY.encode()])
    db = engine.repo.engine
    with db.connect() as conn:
        stale = [(r[0], bytes(r[1])) for r in conn.execute(sa.select(attempts.c.id, attempts.c.secrets))]
    target = stale[0][0]
    assert engine.repo.merge_secrets(target, {"written": "by a worker"}, now=engine.now())  # under OLD
    tally = RekeyTally()
    rotated, lost = Rekeyer(db, codec, tally, 10)._batch(attempts, attempts.c.id, attempts.c.secrets, stale)
    assert rotated == len(stale) - 1 and [row_id for row_id, _ in lost] == [target] and tally.retried == 1
    assert Rekeyer(db, codec, tally, 10)._batch(attempts, attempts.c.id, attempts.c.secrets, lost)[0] == 1
    repo = open_repository(db_url, environ={"PROVISION_SECRET_KEY": new.decode()})
    assert repo.get(target) is not None and repo.get(target).secrets["written"] == "by a worker"  # type: ignore[union-attr]
    with db.connect() as conn:  # every secrets blob is under NEW, the worker's row too
        assert all(codec.is_current(bytes(blob)) for (blob,) in conn.execute(sa.select(attempts.c.secrets)))
    repo.engine.dispose()


class DiesMidway(FernetCodec):
    """A rotation killed after ``rows`` rows: those are under NEW and committed, the rest under OLD."""

    def __init__(self, keys: list[bytes], rows: int) -> None:
        super().__init__(keys)
        self.left = rows

    def rotate(self, blob: bytes) -> bytes | None:
        """Re-seal ``blob`` while rows are left; then die (inside the next row's transaction)."""
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().rotate(blob)


def test_rotation_interrupted_then_resumed(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                           sandbox: Any) -> None:
    """Killed midway, the rotation is finished by a rerun with the same NEW; nothing is lost meanwhile.

    SQLite without ``PROVISION_SECRET_KEY``: the key file beside the database holds NEW,OLD until the
    rerun retires OLD. PostgreSQL: the operator's ``PROVISION_SECRET_KEY=NEW,OLD``, then NEW alone.
    """
    db_path = sqlite_path(sa.make_url(db_url))
    key_file = key_file_for(db_path) if db_path is not None else None
    environ = {} if key_file else {"PROVISION_SECRET_KEY": Fernet.generate_key().decode()}
    repo = open_repository(db_url, migrate=True, environ=environ)  # SQLite: creates the 0600 key file
    old = key_file.read_text().strip() if key_file else environ["PROVISION_SECRET_KEY"]
    engine = Engine(repo, ElementsClient(ClientSettings(
        base_url=sandbox.base_url, user_secret="sandbox-user-secret", org_secret="sandbox-org-secret",
        provider_root=f"{sandbox.root_url}/_provider")), sleep=lambda s: None)
    before = populate(engine)
    engine.close()
    total = sum(map(len, blobs(db_url)))
    rotating = environ if key_file else {"PROVISION_SECRET_KEY": f"{Fernet.generate_key().decode()},{old}"}
    monkeypatch.setattr(keys_mod, "FernetCodec", lambda keys: DiesMidway(keys, rows=2))
    with pytest.raises(KeyboardInterrupt):
        rotate_keys(db_url, environ=rotating, batch=1)
    monkeypatch.undo()
    written = (key_file.read_text() if key_file else rotating["PROVISION_SECRET_KEY"]).strip().split(",")
    assert len(written) == 2 and written[1] == old
    new = written[0].encode()
    assert sum(FernetCodec([new]).is_current(b) for b in sum(blobs(db_url), [])) == 2  # killed midway
    if key_file:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    meanwhile = open_repository(db_url, environ=rotating)  # everything readable with the keys as they are
    assert {a.id: a.secrets for a in meanwhile.list()} == before
    meanwhile.engine.dispose()
    report = rotate_keys(db_url, environ=rotating)
    assert report.complete and report.mode == ("key_file" if key_file else "env")
    assert report.already_current == 2 and report.attempts + report.callbacks == total - 2
    assert report.attempts >= 2 and report.callbacks >= 1
    if key_file:
        assert key_file.read_text().strip() == written[0] and report.retired  # NEW alone; OLD dropped
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert not list(key_file.parent.glob(f".{key_file.name}.*"))  # no temp file left behind
    retired = environ if key_file else {"PROVISION_SECRET_KEY": written[0]}  # NEW alone
    for blob in sum(blobs(db_url), []):
        assert FernetCodec([new]).is_current(blob) and not FernetCodec([old.encode()]).is_current(blob)
    reopened = open_repository(db_url, environ=retired)
    assert {a.id: a.secrets for a in reopened.list()} == before
    reopened.engine.dispose()


def test_cli_keys_rotate(db_url: str, engine_on: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    populate(engine_on(db_url))
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    assert cli_main(["--db", db_url, "keys", "rotate"]) == 2  # one key: nothing to rotate to
    assert "NEW,OLD" in capsys.readouterr().err
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("PROVISION_SECRET_KEY", f"{new},{TEST_KEY}")
    assert cli_main(["--db", db_url, "--json", "keys", "rotate"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is True and doc["attempts"] >= 2 and doc["callbacks"] >= 1 and doc["mode"] == "env"
    assert cli_main(["--db", db_url, "keys", "rotate"]) == 0
    assert "may now drop the old key" in capsys.readouterr().out
    monkeypatch.setenv(
        "PROVISION_SECRET_KEY", Fernet.generate_key().decode() + "," + Fernet.generate_key().decode()
    )
    assert cli_main(["--db", db_url, "--json", "keys", "rotate"]) == 1  # rows no key opens: kept, exit 1
    assert json.loads(capsys.readouterr().out)["unreadable"] >= 3

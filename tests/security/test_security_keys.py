"""``provision keys rotate``: every secret re-encrypted under the new key, nothing lost, resumable."""
from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
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
from engine.security.rotation import rotate_keys
from engine.wiring import open_repository
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


def test_rotation_loses_no_concurrent_write(sqlite_url: str, engine_on: Callable[..., Engine]) -> None:
    """A worker rewrites a row between the rotation's read and its UPDATE: the worker's data wins."""
    engine = engine_on(sqlite_url)
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
    repo = open_repository(sqlite_url, environ={"PROVISION_SECRET_KEY": new.decode()})
    assert repo.get(target) is not None and repo.get(target).secrets["written"] == "by a worker"  # type: ignore[union-attr]
    repo.engine.dispose()


def test_key_file_rotation_interrupted_then_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    sandbox: Any) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    key_file = tmp_path / "p.db.key"
    repo = open_repository(url, environ={})  # the embedded default: creates the 0600 key file
    old = key_file.read_text().strip()
    engine = Engine(repo, ElementsClient(ClientSettings(
        base_url=sandbox.base_url, user_secret="sandbox-user-secret", org_secret="sandbox-org-secret",
        provider_root=f"{sandbox.root_url}/_provider")), sleep=lambda s: None)
    before = populate(engine)

    real = keys_mod._reencrypt

    def crash_midway(db: Any, keys: list[bytes], report: Any, batch: int) -> None:
        raise KeyboardInterrupt  # killed after NEW,OLD was written, before any row changed

    monkeypatch.setattr(keys_mod, "_reencrypt", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        rotate_keys(url, environ={})
    written = key_file.read_text().strip().split(",")
    assert len(written) == 2 and written[1] == old and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Meanwhile everything is still readable with the file as it is.
    assert {a.id: a.secrets for a in open_repository(url, environ={}).list()} == before
    monkeypatch.setattr(keys_mod, "_reencrypt", real)
    report = rotate_keys(url, environ={})
    assert report.complete and report.mode == "key_file" and report.attempts >= 2 and report.callbacks >= 1
    assert key_file.read_text().strip() == written[0]  # NEW alone; OLD dropped
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".p.db.key.*"))  # no temp file left behind
    assert {a.id: a.secrets for a in open_repository(url, environ={}).list()} == before
    engine.close()


def test_cli_keys_rotate(sqlite_url: str, engine_on: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    populate(engine_on(sqlite_url))
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    assert cli_main(["--db", sqlite_url, "keys", "rotate"]) == 2  # one key: nothing to rotate to
    assert "NEW,OLD" in capsys.readouterr().err
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("PROVISION_SECRET_KEY", f"{new},{TEST_KEY}")
    assert cli_main(["--db", sqlite_url, "--json", "keys", "rotate"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is True and doc["attempts"] >= 2 and doc["callbacks"] >= 1 and doc["mode"] == "env"
    assert cli_main(["--db", sqlite_url, "keys", "rotate"]) == 0
    assert "may now drop the old key" in capsys.readouterr().out
    monkeypatch.setenv(
        "PROVISION_SECRET_KEY", Fernet.generate_key().decode() + "," + Fernet.generate_key().decode()
    )
    assert cli_main(["--db", sqlite_url, "--json", "keys", "rotate"]) == 1  # rows no key opens: kept, exit 1
    assert json.loads(capsys.readouterr().out)["unreadable"] >= 3

"""The realm backfill (issue 17) on SQLite and PostgreSQL, against the real sandbox over HTTP.

A database is brought to revision 0009 holding live attempts that the engine really connected (a
consent attempt and a quick start, each with a sandbox instance), then rows only an old engine could
have written are added by SQL with sealed blobs: a second connection to the consent attempt's
company (two old attempts sharing a realm) and a quick connection whose secrets no configured key
opens. ``provision db upgrade`` migrates to head and backfills: realms claimed, the conflict
reported, the unreadable row skipped and counted; a rerun only retries that row, and once it is
gone the step is done and ``open_engine`` finds nothing to do in one primary-key lookup. Then a
new consent for the old company is refused naming the old attempt, and no second instance exists.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet
from testkit import QBO, TEST_KEY, listening, quick_config

from engine import ElementsClient, Engine
from engine.cli.main import main as cli_main
from engine.config import ClientSettings
from engine.core.realm_backfill import backfill_pending, backfill_realms
from engine.wiring import open_engine, open_repository
from persistence.database import create_db_engine
from persistence.migrate import alembic_config, current_revision, head_revision
from states import State


def consent(url: str, realm: str | None = None) -> str:
    """Approve on the sandbox consent page (picking the existing company ``realm`` if given)."""
    form = {"decision": "approve", "company": "sandbox", **({"realm": realm} if realm else {})}
    resp = requests.post(url, data=form, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def consent_attempt(engine: Engine, name: str, realm: str | None = None) -> str:
    """A consent attempt called back on ``realm`` (a new company when None), run until idle."""
    attempt = engine.start("quickbooks", name, flow="oauth2", **QBO)
    engine.run_until_idle()
    outcome = engine.handle_callback(consent(engine.redirect_url(engine.get(attempt.id)) or "", realm))
    assert outcome.status == "applied"
    engine.run_until_idle()
    return attempt.id


def instances_of(sandbox: Any, realm: str) -> list[int]:
    with sandbox.store.lock:
        return [i for i, inst in sandbox.store.instances.items() if inst.realm_id == realm]


def copy_row(db: sa.Engine, source: str, **changes: Any) -> str:
    """Insert a copy of attempt ``source`` under a new id (unique columns cleared), as an old engine
    that had no realm guard could have written it; returns the new id."""
    table = sa.Table("attempts", sa.MetaData(), autoload_with=db)
    with db.begin() as conn:
        row = dict(conn.execute(sa.select(table).where(table.c.id == source)).mappings().one())
        row.update(id=str(uuid.uuid4()), idempotency_key=None, state_nonce_hash=None, connect_token_hash=None,
                   created_at=row["created_at"] + timedelta(seconds=1), **changes)
        conn.execute(table.insert().values(row))
    return str(row["id"])


def upgrade_cli(db_url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``provision db upgrade --json``; its parsed output."""
    assert cli_main(["db", "upgrade", "--db", db_url, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert out["revision"] == head_revision()
    return out


def test_attempts_from_before_migration_0010_are_guarded_after_the_upgrade(
        db_url: str, make_engine: Callable[..., Engine], sandbox: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    engine = make_engine()
    old = consent_attempt(engine, "acme books")
    realm = str(engine.get(old).realm_id)
    quick_cfg = quick_config()
    quick = engine.start("quickbooks", "globex books", flow="quick", config=quick_cfg)
    waiting = engine.start("quickbooks", "initech books", flow="oauth2", **QBO)  # REDIRECTED: no realm yet
    engine.run_until_idle()
    assert engine.get(old).state is engine.get(quick.id).state is State.PROVISIONED
    assert len(instances_of(sandbox, realm)) == 1
    engine.close()

    db = create_db_engine(db_url)
    try:
        command.downgrade(alembic_config(db), "0009")  # drops attempts.realm_id and realm_claims
        assert current_revision(db) == "0009"
        twin = copy_row(db, old, instance_id="990001")  # a second old connection to the same company
        locked = Fernet(Fernet.generate_key()).encrypt(b"{}")  # sealed under a key we do not have
        unreadable = copy_row(db, quick.id, instance_id="990002", secrets=locked)
    finally:
        db.dispose()

    # Without the key the migrations run and the backfill waits for an engine that has it.
    monkeypatch.delenv("PROVISION_SECRET_KEY")
    keyless = upgrade_cli(db_url, capsys)["realm_backfill"]
    assert keyless["done"] is False and "not_run" in keyless
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    first = upgrade_cli(db_url, capsys)["realm_backfill"]
    assert first["claimed"] == 2 and first["unreadable"] == 1 and first["recorded"] == 0
    assert first["visited"] == 4 and first["done"] is False  # the waiting consent attempt is not read
    assert first["conflicts"] == [{"element_key": "quickbooks", "realm_id": realm, "holder": old,
                                   "attempt_id": twin}]
    db = create_db_engine(db_url)
    try:
        claims = claims_of(db)
        with db.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, realm_id FROM attempts")).all()
        realms: dict[str, str | None] = {str(i): r for i, r in rows}
        assert claims == {realm: old, quick_cfg["quickbooks.realm.id"]: quick.id}
        assert realms == {old: realm, twin: realm, quick.id: quick_cfg["quickbooks.realm.id"],
                          unreadable: None, waiting.id: None}

        # A rerun retries only the skipped row; once it is gone (cancelled), the step is done.
        assert cli_main(["db", "upgrade", "--db", db_url]) == 0
        text = capsys.readouterr().out.splitlines()
        assert text[0] == f"database at revision {head_revision()}"
        assert text[1].startswith("realm backfill: 1 attempt(s) visited") and "1 unreadable" in text[1]
        again = upgrade_cli(db_url, capsys)["realm_backfill"]
        assert (again["visited"], again["unreadable"], again["claimed"], again["done"]) == (1, 1, 0, False)
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE attempts SET state = 'FAILED' WHERE id = :id"), {"id": unreadable})
        last = upgrade_cli(db_url, capsys)["realm_backfill"]
        assert (last["visited"], last["done"]) == (0, True) and not backfill_pending(db)
        assert upgrade_cli(db_url, capsys) == {"revision": head_revision()}  # nothing pending: a no-op
        assert claims_of(db) == claims
    finally:
        db.dispose()

    # An engine opened with keys finds nothing to do, in one statement; its guard sees the old attempt.
    client = ElementsClient(ClientSettings(base_url=sandbox.base_url, user_secret="sandbox-user-secret",
                                           org_secret="sandbox-org-secret",
                                           provider_root=f"{sandbox.root_url}/_provider"))
    reopened = open_engine(db_url, client=client, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        statements: list[str] = []
        with listening(reopened.repo.engines, before_cursor_execute=lambda *a: statements.append(a[2])):
            assert not backfill_realms(reopened.repo, now=reopened.repo.database_time).pending
        assert len(statements) == 1 and "backfills" in statements[0]
        second = consent_attempt(reopened, "acme books again", realm)
        refused = reopened.get(second)
        assert refused.state is State.FAILED and refused.failure_reason == "duplicate_connection"
        assert refused.last_error is not None and refused.last_error["live_attempt"] == old
        assert len(instances_of(sandbox, realm)) == 1  # no second instance on the platform
        assert reopened.get(old).state is reopened.get(twin).state is State.PROVISIONED  # neither failed
    finally:
        reopened.close()


def test_an_interrupted_backfill_resumes_after_its_last_batch(
        db_url: str, make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    assert not backfill_pending(engine.repo.engine)  # a new database has nothing to backfill
    configs = [quick_config() for _ in range(3)]
    started = [engine.start("quickbooks", f"books {n}", flow="quick", config=c)
               for n, c in enumerate(configs)]
    engine.run_until_idle()
    engine.close()
    db = create_db_engine(db_url)
    try:
        command.downgrade(alembic_config(db), "0009")
        command.upgrade(alembic_config(db), "head")
        assert backfill_pending(db)
    finally:
        db.dispose()

    repo = open_repository(db_url, migrate=False, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        reads: list[int] = []

        def crashing_clock() -> datetime:  # the process dies while claiming the second batch's row
            reads.append(1)
            if len(reads) == 2:
                raise RuntimeError("killed")
            return repo.database_time()

        with pytest.raises(RuntimeError, match="killed"):
            backfill_realms(repo, now=crashing_clock, batch=1)
        oldest = min(started, key=lambda a: (a.created_at, a.id))
        assert claims_of(repo.engine) == {configs[started.index(oldest)]["quickbooks.realm.id"]: oldest.id}
        resumed = backfill_realms(repo, now=repo.database_time, batch=1)
        # The first row is not read again.
        assert (resumed.visited, resumed.claimed, resumed.done) == (2, 2, True)
        assert claims_of(repo.engine) == {c["quickbooks.realm.id"]: a.id
                                          for c, a in zip(configs, started, strict=True)}
        assert not backfill_realms(repo, now=repo.database_time).pending
    finally:
        repo.close()


def claims_of(db: sa.Engine) -> dict[str, str]:
    """{realm_id: attempt id} of every realm claim."""
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT realm_id, attempt_id FROM realm_claims"))
        return {str(realm): str(holder) for realm, holder in rows}

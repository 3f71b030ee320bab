"""Start-up of the ``provision`` command: what a command that needs no server does not import.

Most commands (``list``, ``show``, ``start``, ``worker``...) open an up-to-date database and print.
Alembic (with Mako), werkzeug, the web edges and the simulator's server are each a tenth of a second
or more of import on a 2-core machine, so they load only in the commands that use them: migrating,
``serve``/``console``/``worker --metrics-port``, and ``sandbox``/``demo``; oauthlib and
requests-oauthlib only when an OAuth1 request is signed. The revision check of an up-to-date
database is one query against ``persistence.migrate.HEAD``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from testkit import TEST_KEY

from persistence.migrate import HEAD, current_revision, head_revision, upgrade

#: Imported only by the commands that use them.
LAZY = ("alembic", "mako", "werkzeug", "waitress", "sandbox.server", "engine.web.callback_app",
        "engine.web.console", "engine.web.worker_metrics", "oauthlib", "requests_oauthlib")

PROBE = """
import json, sys
from engine.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
"""


def run_command(*argv: str) -> dict[str, object]:
    env = {**os.environ, "PROVISION_SECRET_KEY": TEST_KEY}
    proc = subprocess.run([sys.executable, "-c", PROBE % (LAZY,), *argv], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_head_is_the_newest_migration_script() -> None:
    assert HEAD == head_revision()


def test_commands_on_an_up_to_date_database_import_no_server_and_no_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    db = sa.create_engine(url)
    try:
        assert upgrade(db) == HEAD == current_revision(db)
    finally:
        db.dispose()
    for command in ("list", "events", "workers"):
        assert run_command("--db", url, command) == {"code": 0, "loaded": []}, command


def test_a_database_that_needs_migrating_still_gets_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    res = run_command("--db", url, "db", "upgrade")
    assert res["code"] == 0 and "alembic" in res["loaded"]  # type: ignore[operator]
    db = sa.create_engine(url)
    try:
        assert current_revision(db) == HEAD
    finally:
        db.dispose()


def test_a_never_migrated_database_has_no_revision(tmp_path: Path) -> None:
    db = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert current_revision(db) is None
    finally:
        db.dispose()

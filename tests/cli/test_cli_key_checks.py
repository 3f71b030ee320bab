"""A wrong or lost key is refused at start (issue 16 item 3), never a silent new key."""
from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from engine.security.crypto import key_id
from engine.security.rotation import key_file_for
from persistence.database import sqlite_path
from persistence.schema import attempts

START_ANOTHER = ("start", "--element", "quickbooks", "--flow", "oauth1", "--name", "second", "--api-key",
                 "dev-key", "--api-secret", "x" * 12, "--callback-url", "http://127.0.0.1:8050/callback",
                 "--sandbox-company")


def test_start_with_a_key_that_opens_nothing_is_refused(db_url: str, cli_at: Callable[[str], Any]) -> None:
    cli = cli_at(db_url)
    first = cli.start_oauth1()
    right = cli.env["PROVISION_SECRET_KEY"]
    cli.env["PROVISION_SECRET_KEY"] = Fernet.generate_key().decode()
    # Independent refusals, run side by side (each command costs ~1 s of imports).
    refused, worker = cli.many(START_ANOTHER, ("worker", "--once"))
    assert refused.returncode == 1, refused.stderr
    assert "opens none of the stored secrets" in refused.stderr and "PROVISION_SECRET_KEY" in refused.stderr
    assert worker.returncode == 1, worker.stderr  # a worker is refused the same way
    assert "opens none of the stored secrets" in worker.stderr
    cli.env["PROVISION_SECRET_KEY"] = cli.env["PROVISION_SECRET_KEY"] + "," + Fernet.generate_key().decode()
    cli("list", expect=1)
    assert attempt_ids(db_url) == [first]  # nothing was written with the wrong keys
    assert Fernet(right.encode()).decrypt(sealed(db_url))  # and the right key still opens it


def test_a_missing_key_beside_stored_secrets_is_an_error(db_url: str, cli_at: Callable[[str], Any]) -> None:
    """SQLite without ``PROVISION_SECRET_KEY``: the key file beside the database deleted. PostgreSQL
    (no key file there): the variable unset. Either is refused, and no new key is made."""
    cli = cli_at(db_url)
    path = sqlite_path(db_url)
    key_file = key_file_for(path) if path is not None else None
    if key_file is not None:
        del cli.env["PROVISION_SECRET_KEY"]  # the SQLite key file beside the database
    first = cli.start_oauth1()
    if key_file is not None:
        assert key_file.exists()
        kept = key_file.read_text()
        key_file.unlink()
    else:
        kept = cli.env.pop("PROVISION_SECRET_KEY")
    listed, started = cli.many(("list",), START_ANOTHER)
    for refused in (listed, started):
        assert refused.returncode == 1, refused.stderr
        if key_file is not None:
            assert "key file" in refused.stderr and "is missing" in refused.stderr
        else:
            assert "PROVISION_SECRET_KEY is not set" in refused.stderr
    if key_file is not None:
        assert not key_file.exists()  # no silent new key
    assert attempt_ids(db_url) == [first]  # nothing written without the key
    assert Fernet(kept.strip().encode()).decrypt(sealed(db_url))  # the key kept opens the stored row


def attempt_ids(url: str) -> list[str]:
    """The ids of the stored attempts, read directly (each ``provision`` command costs ~1 s)."""
    db = sa.create_engine(url)
    try:
        with db.connect() as conn:
            return [row_id for (row_id,) in conn.execute(sa.select(attempts.c.id))]
    finally:
        db.dispose()


def sealed(url: str) -> bytes:
    """The secrets blob of the one stored attempt."""
    db = sa.create_engine(url)
    try:
        with db.connect() as conn:
            return bytes(conn.execute(sa.select(attempts.c.secrets)).scalar_one())
    finally:
        db.dispose()


def wait_for(check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy (real processes, real time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_workers_lists_live_workers_with_their_keys(cli: Any) -> None:
    cli.start_oauth1()  # creates the database
    assert cli("workers").stdout.strip() == "no live workers"
    running = [cli.popen("worker"), cli.popen("serve", "--port", "0")]
    try:
        listed = wait_for(lambda: len(rows := cli.json("workers")["workers"]) == 2 and rows)
        key = cli.env["PROVISION_SECRET_KEY"].encode()
        roles = {(r["role"], r["pid"]) for r in listed}
        assert roles == {("worker", running[0].pid), ("serve", running[1].pid)}
        assert all(r["key_ids"] == [key_id(key)] for r in listed)
        assert all(r["worker_id"] in cli("workers").stdout for r in listed)
    finally:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            out, err = proc.communicate(timeout=30)
            cli.outputs += [out, err]
    assert [proc.returncode for proc in running] == [0, 0]
    assert cli.json("workers") == {"workers": []}  # a clean stop removes the rows

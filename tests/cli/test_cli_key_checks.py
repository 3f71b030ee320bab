"""A wrong or lost key is refused at start (issue 16 item 3), never a silent new key."""
from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from engine.security.crypto import key_id


def test_start_with_a_key_that_opens_nothing_is_refused(cli: Any) -> None:
    first = cli.start_oauth1()
    right = cli.env["PROVISION_SECRET_KEY"]
    cli.env["PROVISION_SECRET_KEY"] = Fernet.generate_key().decode()
    refused = cli("start", "--element", "quickbooks", "--flow", "oauth1", "--name", "second",
                  "--api-key", "dev-key", "--api-secret", "x" * 12, "--callback-url", cli.CALLBACK_URL,
                  "--sandbox-company", expect=1)
    assert "opens none of the stored secrets" in refused.stderr and "PROVISION_SECRET_KEY" in refused.stderr
    assert cli("worker", "--once", expect=1).returncode == 1  # a worker is refused the same way
    cli.env["PROVISION_SECRET_KEY"] = cli.env["PROVISION_SECRET_KEY"] + "," + Fernet.generate_key().decode()
    cli("list", expect=1)
    cli.env["PROVISION_SECRET_KEY"] = right  # nothing was written with the wrong keys
    assert [a["id"] for a in cli.json("list")["attempts"]] == [first]


def test_a_missing_key_file_beside_stored_secrets_is_an_error(cli: Any, tmp_path: Path) -> None:
    del cli.env["PROVISION_SECRET_KEY"]  # the SQLite key file beside the database
    cli.start_oauth1()
    key_file = tmp_path / "p.db.key"
    assert key_file.exists()
    key_file.unlink()
    refused = cli("list", expect=1)
    assert "key file" in refused.stderr and "is missing" in refused.stderr
    assert not key_file.exists()  # no silent new key


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

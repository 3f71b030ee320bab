"""Bulk ``provision check`` by filter, and the progress bar of long commands (issue 18 items 4-5).

Real engine, real sandbox over HTTP, real SQLite file; the ``provision`` console script runs as a
subprocess, once under a pseudo-terminal to see the rich bar and otherwise with pipes, where no bar
may ever appear.
"""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from testkit import TEST_KEY, connected

from engine import Engine

PROVISION = str(Path(sys.executable).with_name("provision"))
#: What rich draws for a bar (box-drawing / block characters), and its "done/total" column.
BAR_MARKS = ("━", "╸", "╺", "█")



def _env(db_url: str, sandbox: Any) -> dict[str, str]:
    return {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": db_url,
            "ELEMENTS_BASE_URL": sandbox.base_url,
            "ELEMENTS_USER_SECRET": "sandbox-user-secret", "ELEMENTS_ORG_SECRET": "sandbox-org-secret",
            "PATH": str(Path(sys.executable).parent), "TERM": "xterm-256color", "COLUMNS": "100"}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([PROVISION, *args], capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def _run_on_pty(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal; everything it drew, and the exit code."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([PROVISION, *args], stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return proc.wait(timeout=60), drawn.decode(errors="replace")


def test_check_by_filter_counts_first_then_checks_with_yes(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    acme = connected(engine, "acme")  # one live connection per customer and element
    others = [connected(engine, "other"), connected(engine, "third")]
    env = _env(sqlite_url, sandbox)

    dry = _run(env, "--json", "check", "--customer", "acme", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"action": "check", "dry_run": True, "count": 1, "ids": [acme]}
    everyone = json.loads(_run(env, "--json", "check", "--element", "quickbooks", "--dry-run").stdout)
    assert sorted(everyone["ids"]) == sorted([acme, *others])
    assert all(engine.get(i).last_check_at is None for i in [acme, *others])  # dry runs checked nothing

    refused = _run(env, "check", "--customer", "acme")  # no --yes, and no terminal to ask on
    assert refused.returncode == 2 and "--yes" in refused.stderr and "--dry-run" in refused.stderr
    wrong_state = _run(env, "check", "--state", "failed", "--yes")
    assert wrong_state.returncode == 2 and "PROVISIONED" in wrong_state.stderr
    both = _run(env, "check", acme, "--all")
    assert both.returncode == 2

    done = _run(env, "--json", "check", "--customer", "acme", "--element", "quickbooks", "--yes")
    assert done.returncode == 0, done.stderr
    assert [(r["id"], r["health"]) for r in json.loads(done.stdout)["checks"]] == [(acme, "healthy")]
    assert [engine.get(i).health for i in [acme, *others]] == ["healthy", None, None]
    for stream in (done.stdout, done.stderr, dry.stdout, dry.stderr):  # pipes: never a bar
        assert not any(mark in stream for mark in BAR_MARKS)


def test_progress_bar_is_drawn_on_a_terminal_only(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    ids = [connected(engine, f"c{n}") for n in range(2)]
    env = _env(sqlite_url, sandbox)

    code, drawn = _run_on_pty(env, "check", "--all")
    assert code == 0, drawn
    assert "check" in drawn and any(mark in drawn for mark in BAR_MARKS) and "/2" in drawn, drawn
    assert all(f"{i}  healthy" in drawn for i in ids)

    for quiet in (("--json", "check", "--all"), ("check", "--all", "-q")):
        code, drawn = _run_on_pty(env, *quiet)
        assert code == 0, drawn
        assert not any(mark in drawn for mark in BAR_MARKS) and "/2" not in drawn, (quiet, drawn)
    piped = _run(env, "check", "--all")
    assert piped.returncode == 0 and not any(mark in piped.stdout + piped.stderr for mark in BAR_MARKS)

    # keys rotate: a spinner (the number of rows is not known up front) while it re-encrypts.
    rotating = {**env, "PROVISION_SECRET_KEY": f"{Fernet.generate_key().decode()},{TEST_KEY}"}
    code, drawn = _run_on_pty(rotating, "keys", "rotate")
    assert code == 0 and "re-encrypting secrets" in drawn and "re-encrypted" in drawn, drawn
    code, drawn = _run_on_pty(rotating, "keys", "rotate", "-q")
    assert code == 0 and "re-encrypting secrets" not in drawn, drawn

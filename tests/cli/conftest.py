"""Fixtures for the CLI tests: the real installed ``provision`` command against an in-process sandbox.

Every test runs the console script as a subprocess (what a user runs), with ``ELEMENTS_BASE_URL``
pointing at a sandbox on a free port and a SQLite database in the test's tmp dir (``cli``), or the
database of a given URL (``cli_at``: the few tests that must run on PostgreSQL too). Every output is
recorded and checked at teardown for the planted API secret.

Helpers are reached through the ``cli`` fixture (``cli.SECRET``, ``cli.consent``...), not imported:
``tests/conftest.py`` exists too, so ``import conftest`` would be ambiguous.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from testkit import provision_path

from persistence.migrate import upgrade
from sandbox import Sandbox, start

SECRET = "s3cr3t-planted"
CALLBACK_URL = "http://127.0.0.1:8050/callback"


class Cli:
    """Runs ``provision`` with one database and sandbox; keeps every output for the secret check."""

    SECRET = SECRET
    CALLBACK_URL = CALLBACK_URL

    def __init__(self, exe: str, db_url: str, env: dict[str, str]) -> None:
        self.exe = exe
        self.db_url = db_url
        self.env = env
        self.outputs: list[str] = []

    def argv(self, *args: str, db: bool = True) -> list[str]:
        """The command line: ``provision --db URL ARGS``."""
        return [self.exe, *(["--db", self.db_url] if db else []), *args]

    def __call__(self, *args: str, expect: int | None = 0, db: bool = True,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run to completion; asserts the exit code unless ``expect`` is None."""
        proc = subprocess.run(self.argv(*args, db=db), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        self.outputs += [proc.stdout, proc.stderr]
        if expect is not None:
            assert proc.returncode == expect, (
                f"{args}: exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def many(self, *commands: tuple[str, ...], timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands concurrently (each start costs ~1 s of imports); no exit check."""
        procs = [(cmd, self.popen(*cmd)) for cmd in commands]
        results = []
        for cmd, proc in procs:
            out, err = proc.communicate(timeout=timeout)
            self.outputs += [out, err]
            assert "Traceback" not in err, err
            results.append(subprocess.CompletedProcess(self.argv(*cmd), proc.returncode, out, err))
        return results

    def json(self, *args: str) -> Any:
        """Run with ``--json`` and parse stdout."""
        return json.loads(self("--json", *args).stdout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        """Start a long-running command (serve, worker)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.argv(*args), env=self.env, text=True, **kw)

    @staticmethod
    def consent(url: str, decision: str = "approve", company: str = "sandbox") -> str:
        """Play the user on the sandbox consent page; returns the redirect Location."""
        assert requests.get(url, timeout=5).status_code == 200
        answer = requests.post(url, data={"decision": decision, "company": company}, allow_redirects=False,
                               timeout=5)
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]

    def start_oauth1(self, *extra: str, name: str = "QBO_Instance") -> str:
        """``provision start`` for QuickBooks OAuth1 with the planted secret; returns the id."""
        out = self("start", "--element", "quickbooks", "--flow", "oauth1", "--name", name,
                   "--api-key", "dev-key", "--api-secret", SECRET, "--callback-url", CALLBACK_URL,
                   "--tag", "For Docs", "--sandbox-company", *extra).stdout.strip()
        assert len(out) == 36, out
        return out




@pytest.fixture()
def sandbox() -> Iterator[Sandbox]:
    """A sandbox on a free loopback port."""
    with start(port=0, seed=1) as running:
        yield running


@pytest.fixture()
def cli_at(sandbox: Sandbox) -> Iterator[Callable[[str], Cli]]:
    """Factory: a ``Cli`` on the database at a given URL (e.g. ``db_url``, so that a test runs on both
    backends) talking to ``sandbox``; a PostgreSQL schema is migrated first (``provision db
    upgrade``). Asserts that no output leaked the secret."""
    made: list[Cli] = []

    def make(db_url: str) -> Cli:
        if not db_url.startswith("sqlite"):
            db = sa.create_engine(db_url)
            try:
                upgrade(db)
            finally:
                db.dispose()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROVISION_", "ELEMENTS_"))}
        env.update({"ELEMENTS_BASE_URL": sandbox.base_url,
                    "PROVISION_SECRET_KEY": Fernet.generate_key().decode(), "PYTHONUNBUFFERED": "1"})
        made.append(Cli(provision_path(), db_url, env))
        return made[-1]

    yield make
    leaked = [o for runner in made for o in runner.outputs if SECRET in o]
    assert not leaked, f"the api secret was printed: {leaked[0][:500]}"


@pytest.fixture()
def cli(cli_at: Callable[[str], Cli], tmp_path: Path) -> Cli:
    """A ``Cli`` on a fresh SQLite database talking to ``sandbox``; asserts no output leaks the secret."""
    return cli_at(f"sqlite:///{tmp_path / 'p.db'}")

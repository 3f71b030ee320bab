"""An embedder's own DEBUG logging is redacted once it calls ``open_engine`` (issue 14 item 6).

``open_engine`` installs the redaction filter (idempotently) and no constructor touches logging, so
the embedder's handlers stay as configured, yet no record of ``engine.*`` or urllib3 carries a
secret, whether the handler existed before ``open_engine`` or was added after it. The embedder runs
in a fresh process (``embedder_app.py``), so no other test's logging setup can help it pass.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_security_leaks import API_SECRET, ORG_SECRET, USER_SECRET, harvest, hits, request_tokens
from testkit import TEST_KEY

from sandbox import Sandbox

HERE = Path(__file__).resolve().parent


def _records(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_embedder_debug_logging_never_shows_a_secret(sqlite_url: str, planted_sandbox: Sandbox) -> None:
    search_path = [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]  # for testkit
    planted = planted_sandbox
    env = {**os.environ, "PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": planted.base_url,
           "ELEMENTS_USER_SECRET": USER_SECRET, "ELEMENTS_ORG_SECRET": ORG_SECRET,
           "PYTHONPATH": os.pathsep.join(search_path)}
    proc = subprocess.run([sys.executable, str(HERE / "embedder_app.py"), sqlite_url, API_SECRET],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embedder: done" in proc.stdout
    needles = harvest(planted) | request_tokens(planted) | {API_SECRET, USER_SECRET, ORG_SECRET}
    assert len(needles) > 8  # the flows really issued verifiers, codes and tokens
    for name, text in (("handler set up before open_engine", proc.stderr),
                       ("handler added after open_engine", proc.stdout)):
        urllib3 = _records(text, "urllib3.")
        # The DEBUG request lines were really emitted, including GET /oauth/token (apiSecret in its query).
        assert any("oauth/token" in line for line in urllib3), (name, text[-2000:])
        assert _records(text, "engine."), (name, text[-2000:])
        assert hits(text, needles) == [], name

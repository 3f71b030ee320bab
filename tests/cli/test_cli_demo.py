"""``provision demo``: every flow end to end with nothing but the install."""
from __future__ import annotations

from typing import Any


def test_demo_runs_every_flow(cli: Any) -> None:
    # No --db: the demo uses its own temporary database and its own sandbox.
    result = cli("demo", db=False, timeout=60)
    out = result.stdout
    for flow in ("oauth1", "oauth2", "quick"):
        assert f"{flow}:" in out
    assert out.count("=> PROVISIONED: as expected") == 3
    assert "=> FAILED (user_denied): as expected" in out
    assert "=> FAILED (invalid_database): as expected" in out
    assert "Development keys can only connect sandbox companies" in out  # the hint
    # Development keys without the sandbox-company flag: the platform's 3100, with the fix in the hint.
    assert "=> FAILED (permanent_error): as expected" in out
    assert "AuthorizationFailed" in out and "--sandbox-company" in out
    assert "issue_token" in out and "receive_callback" in out and "quick_provision" in out  # timelines
    assert out.strip().splitlines()[-1].startswith("demo: 6/6 attempts ended as expected")
    assert "demo-app-secret" not in out + result.stderr
    assert "oauth_verifier=" not in out  # redirects carry one-time verifiers: never printed

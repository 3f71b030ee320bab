"""``provision start`` asks the platform about the element first (``--offline`` skips it), and engine
errors are rendered in the CLI's words (issue 18 items 5, 7): the real console script, real sandbox."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

START = ("start", "--flow", "oauth2", "--name", "n", "--api-key", "k", "--api-secret", "x",
         "--callback-url", "https://app.example.com/cb")


def test_unknown_element_is_refused_unless_offline(cli: Any, tmp_path: Path) -> None:
    refused = cli(*START, "--element", "nosuchelement", expect=2)
    assert "--element" in refused.stderr and "'nosuchelement'" in refused.stderr
    assert "--offline" in refused.stderr and "verify_element" not in refused.stderr
    assert not (tmp_path / "p.db").exists()  # refused before the database was even created
    offline = cli(*START, "--element", "nosuchelement", "--offline")
    assert len(offline.stdout.strip()) == 36 and offline.stderr == ""


def test_unknown_config_key_warns_with_the_known_ones_and_starts(cli: Any) -> None:
    started = cli(*START, "--element", "quickbooks", "--config", "use_sandbx=true")
    assert len(started.stdout.strip()) == 36
    assert started.stderr.startswith("provision: warning: configuration key use_sandbx is not known")
    assert "use_sandbox" in started.stderr and "oauth.callback.url" in started.stderr
    assert [a["id"] for a in cli.json("list")["attempts"]] == [started.stdout.strip()]
    plain = cli(*START, "--element", "quickbooks", "--name", "other", "--sandbox-company")
    assert plain.stderr == ""  # known keys: no warning


def test_platform_down_is_exit_1_suggesting_offline(cli: Any, tmp_path: Path) -> None:
    cli.env = {**cli.env, "ELEMENTS_BASE_URL": "http://127.0.0.1:9/elements/api-v2",
               "PROVISION_CONNECT_TIMEOUT_SECONDS": "1"}
    down = cli("--json", *START, "--element", "quickbooks", expect=1)
    document = json.loads(down.stderr)["error"]
    assert document["kind"] == "element_check_unavailable" and document["field"] == "--offline"
    assert "--offline" in document["hint"] and "verify_element" not in down.stderr
    assert not (tmp_path / "p.db").exists()


def test_engine_errors_are_shown_with_flags(cli: Any) -> None:
    missing = cli("start", "--element", "quickbooks", "--flow", "quick", "--name", "q", "--api-key", "k",
                  "--offline", expect=2)
    assert "--config KEY=VALUE" in missing.stderr and "run start again" in missing.stderr
    cli(*START, "--element", "quickbooks", "--customer", "acme", "--sandbox-company")
    duplicate = cli("--json", *START, "--element", "quickbooks", "--customer", "acme", "--sandbox-company",
                    expect=2)
    document = json.loads(duplicate.stderr)["error"]
    assert document["field"] == "--customer" and "--replace" in document["hint"]
    assert "replace=True" not in duplicate.stderr
    bad_url = cli("db", "upgrade", "--db", "not a url", db=False, expect=2)
    assert bad_url.stderr.startswith("provision: error: --db: cannot use database URL")

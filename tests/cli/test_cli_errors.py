"""Usage, input and runtime errors: the right exit code, one clear line on stderr, nothing persisted."""
from __future__ import annotations

import json
from typing import Any

START = ("start", "--element", "quickbooks", "--name", "N")


def test_usage_errors_exit_2_and_change_nothing(cli: Any) -> None:
    secret = ("--api-secret", cli.SECRET)
    cli("db", "upgrade")  # `show` and `list` only read: they refuse a database that does not exist
    results = cli.many(
        ("start", "--name", "N", *secret),
        (*START, "--api-key", "k", *secret, "--callback-url", cli.CALLBACK_URL, "--config", "novalue"),
        (*START, "--api-key", "k", *secret, "--callback-url", "ftp://example.com/cb"),
        (*START, "--flow", "quick", *secret),
        ("show", "no-such-attempt"),
        ("list", "--older-than", "soon"),
    )
    for result in results:
        assert result.returncode == 2, (result.args, result.stdout, result.stderr)
        assert result.stdout == ""
    missing_element, bad_config, bad_url, missing_config, unknown, older = (r.stderr for r in results)
    assert "the following arguments are required: --element" in missing_element
    assert "provision: error: --config: expected KEY=VALUE, got 'novalue'" in bad_config
    assert "provision: error: --callback-url: must be an absolute http or https URL" in bad_url
    # The message names every missing entry, and the hint says how to pass them.
    assert missing_config.startswith("provision: error: configuration:")
    for entry in ("oauth.api.key", "oauth.user.token", "oauth.user.token.secret", "quickbooks.realm.id"):
        assert entry in missing_config
    assert "oauth.api.secret," not in missing_config and "--config KEY=VALUE" in missing_config
    assert "provision: error: no attempt with id 'no-such-attempt'" in unknown
    assert "provision: error: --older-than: expected a duration like 30m, 2h or 7d" in older
    for text in (bad_config, bad_url, missing_config, unknown, older):
        assert len(text.strip().splitlines()) == 1, text  # one line, no traceback

    assert json.loads(cli("--json", "list").stdout) == {"attempts": [], "counts": {}}


def test_runtime_failure_exits_1(cli: Any) -> None:
    # Nothing listens on port 1: a runtime failure (exit 1), reported in one line without a traceback.
    down, bad_db = cli.many(("--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "list"),
                            ("--db", "sqlite:////nonexistent-dir/x.db", "list"))
    assert down.returncode == 1 and down.stderr.startswith("provision: error: OperationalError")
    assert len(down.stderr.strip().splitlines()) == 1
    assert bad_db.returncode == 2 and "provision: error: --db:" in bad_db.stderr


def test_reauthorize_refuses_an_attempt_without_instance(cli: Any) -> None:
    """`provision reauthorize` is an operator action: usage error (exit 2) when nothing to re-authorise."""
    attempt_id = cli("start", "--element", "quickbooks", "--flow", "oauth2", "--name", "R", "--api-key", "k",
                     "--api-secret", cli.SECRET, "--callback-url", cli.CALLBACK_URL).stdout.strip()
    result = cli("reauthorize", attempt_id, expect=2)
    assert "re-authorise" in result.stderr


def test_json_errors_are_one_json_document_on_stderr(cli: Any) -> None:
    """Under --json every refusal, argparse's included, is ``{"error": ...}`` on stderr (exit 2)."""
    cases = {("start", "--flow", "bogus"): "--flow", ("list", "--bogus"): "--bogus",
             ("list", "--limit"): "--limit", ("bogusverb",): "COMMAND", ("db",): "ACTION",
             ("start", "--name", "N"): "--element", ("list", "--limit", "x"): "--limit"}
    results = cli.many(*(("--json", *argv) for argv in cases))
    for (argv, field), result in zip(cases.items(), results, strict=True):
        assert (result.returncode, result.stdout) == (2, ""), (argv, result)
        doc = json.loads(result.stderr)
        assert doc["error"]["field"] == field and doc["error"]["kind"] == "invalid_input", (argv, doc)
    plain = cli("start", "--flow", "bogus", expect=2).stderr  # without --json: the usage, then the line
    assert plain.startswith("usage: provision start")
    assert "provision: error: argument --flow: invalid choice" in plain


def test_check_resolves_a_prefix_and_refuses_an_unknown_id(cli: Any) -> None:
    attempt_id = cli("start", "--element", "quickbooks", "--flow", "oauth2", "--name", "C", "--api-key", "k",
                     "--api-secret", cli.SECRET, "--callback-url", cli.CALLBACK_URL).stdout.strip()
    # A prefix names the attempt: its row carries the whole id (it is not PROVISIONED: exit 1).
    rows = cli("--json", "check", attempt_id[:8], expect=1).stdout
    assert [r["id"] for r in json.loads(rows)["checks"]] == [attempt_id]
    unknown = cli("check", "0000dead", expect=2)
    assert unknown.stdout == "" and "no attempt with id '0000dead'" in unknown.stderr
    assert "provision list" in unknown.stderr
    whole = cli("--json", "check", "00000000-0000-0000-0000-000000000000", expect=2)
    assert whole.stdout == "" and json.loads(whole.stderr)["error"]["kind"] == "attempt_not_found"

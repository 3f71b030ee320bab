"""Issue 18 item 5: id prefixes, read-only commands that never create a database, JSON errors,
``--version``, and diagram formats that must match the file's suffix."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.cli.main import package_version


def test_unique_prefixes_are_accepted_and_ambiguous_ones_list_candidates(cli: Any) -> None:
    first = cli.start_oauth1(name="Prefix_A")
    second = cli.start_oauth1(name="Prefix_B")
    shown, cancelled = cli.many(("--json", "show", first[:8]), ("--json", "cancel", second[:6]))
    assert json.loads(shown.stdout)["id"] == first
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout) == {
        "id": second, "state": "FAILED", "failure_reason": "cancelled"}
    common = next((i for i in range(36) if first[i] != second[i]), 36)
    too_short, unknown, restarted = cli.many(("show", first[:3]), ("show", "ffff" if first[:4] != "ffff"
                                                                    else "eeee"),
                                             ("restart", second[:5]))
    assert too_short.returncode == 2 and "at least 4 characters" in too_short.stderr
    assert unknown.returncode == 2 and "no attempt" in unknown.stderr
    assert restarted.returncode == 0 and second in restarted.stdout and "NEW" in restarted.stdout
    if common >= 4:  # uuid4s rarely share 4 characters; when they do, the prefix is ambiguous
        shared = cli("show", first[:common], expect=2)
        assert first in shared.stderr and second in shared.stderr


#: Every command that only reads: each must refuse a missing SQLite file (issue 18 item 5).
READ_ONLY_COMMANDS = (("list",), ("show", "abcd1234"), ("diagram", "abcd1234"), ("events",),
                      ("events", "--follow"), ("workers",), ("check", "--all"), ("check", "abcd1234"),
                      ("check", "--state", "provisioned", "--dry-run"),
                      ("prune", "--history-older-than", "90d", "--dry-run"))


def test_read_only_commands_never_create_a_database(cli: Any, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "provision.db"
    missing.parent.mkdir()  # the folder exists, so SQLite could create the file: it must not
    cli.db_url = f"sqlite:///{missing}"
    for command, result in zip(READ_ONLY_COMMANDS, cli.many(*READ_ONLY_COMMANDS), strict=True):
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert str(missing) in result.stderr and "--db" in result.stderr, (command, result.stderr)
    as_json = cli("--json", "list", expect=2)
    document = json.loads(as_json.stderr)["error"]
    assert document["field"] == "--db" and str(missing) in document["message"] and document["hint"]
    assert as_json.stdout == ""
    assert list(missing.parent.iterdir()) == []  # no db, no key file


def test_json_errors_version_and_diagram_suffixes(cli: Any, tmp_path: Path) -> None:
    bad_limit, wrong_suffix, mismatch, version = cli.many(
        ("--json", "list", "--limit", "0"), ("diagram", "-o", str(tmp_path / "x.jpg")),
        ("diagram", "--format", "svg", "-o", str(tmp_path / "x.png")), ("--version",))
    assert bad_limit.returncode == 2
    error = json.loads(bad_limit.stderr)["error"]
    assert error["kind"] == "invalid_input" and error["field"] == "--limit" and "--limit" in error["message"]
    assert wrong_suffix.returncode == 2 and ".jpg is not a diagram format" in wrong_suffix.stderr
    assert mismatch.returncode == 2 and "svg does not match the file x.png" in mismatch.stderr
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "x.png").exists()
    assert version.returncode == 0 and version.stdout.strip() == f"provision {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())

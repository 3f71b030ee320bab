"""Bulk ``provision cancel|restart`` by filter: a dry run first, ``--yes`` to act (issue 18 item 5)."""
from __future__ import annotations

import json
from typing import Any


def test_bulk_cancel_and_restart_by_filter(cli: Any) -> None:
    ids = [cli.start_oauth1(name=f"Bulk_{n}") for n in range(3)]
    dry = json.loads(cli("--json", "cancel", "--state", "new", "--dry-run").stdout)
    assert dry["dry_run"] is True and dry["count"] == 3 and sorted(dry["ids"]) == sorted(ids)
    assert {a["state"] for a in cli.json("list")["attempts"]} == {"NEW"}  # the dry run changed nothing

    refused = cli("cancel", "--state", "new", expect=2)  # no --yes, and no terminal to ask on
    assert "--yes" in refused.stderr and "--dry-run" in refused.stderr
    both = cli("cancel", ids[0], "--state", "new", expect=2)
    assert "not both" in both.stderr

    done = cli("cancel", "--state", "new", "--yes")
    assert done.stdout.strip() == "cancel: 3 changed, 0 skipped (they had moved)"
    listed = cli.json("list")["attempts"]
    assert {(a["state"], a["failure_reason"]) for a in listed} == {("FAILED", "cancelled")}

    plain_dry = cli("restart", "--reason", "cancelled", "--dry-run").stdout.splitlines()
    assert plain_dry[-1] == "restart: 3 attempts would change (dry run; nothing changed)"
    restarted = json.loads(cli("--json", "restart", "--reason", "cancelled", "--yes").stdout)
    assert restarted["count"] == 3 and restarted["skipped"] == []
    assert {a["state"] for a in cli.json("list")["attempts"]} == {"NEW"}
    history = cli.json("show", ids[1])["history"]
    assert [h["trigger"] for h in history][-2:] == ["fail", "restart"]

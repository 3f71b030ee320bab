"""``provision worker``: JSON report lines, the --json summary, and exit 1 when it cannot work."""
from __future__ import annotations

import json
import socket
from typing import Any


def test_worker_json_lines_and_summary(cli: Any) -> None:
    first = cli.start_oauth1(name="Books_A")
    worker = cli("--json", "worker", "--once", "--log-format", "json")
    lines = worker.stdout.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{\"time\"")]
    assert [(r["attempt"], r["from"], r["to"], r["outcome"]) for r in records] == [
        (first, "NEW", "REDIRECTED", "advanced")]  # issue_token and redirect ran under one claim
    assert records[0]["name"] == "Books_A" and records[0]["time"].endswith("Z")
    summary = json.loads("\n".join(line for line in lines if not line.startswith("{\"time\"")))
    assert summary["claimed"] == 1 and summary["advanced"] == 2 and summary["steps"] == 2  # "steps" kept
    assert summary["failed"] == 0 and summary["failed_by_reason"] == {}


def test_worker_exits_1_when_the_database_is_unreachable(cli: Any) -> None:
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cli.db_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/none?connect_timeout=2"
    down = cli("worker", "--once", expect=1)
    assert down.stderr.startswith("provision: error:") and "claimed" not in down.stderr

"""The issue's "done means" sequence and the everyday verbs, through the real ``provision`` command.

Each ``provision`` run costs about a second of imports, so tests chain many checks per run and run
independent commands concurrently (``Cli.many``).
"""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from typing import Any

from sandbox import Sandbox


def test_oauth1_done_means_sequence(cli: Any, sandbox: Sandbox) -> None:
    attempt_id = cli.start_oauth1()
    cli("worker", "--once")
    shown = cli.json("show", attempt_id)
    assert shown["state"] == "REDIRECTED"
    assert shown["redirect_url"] and shown["redirect_url"].startswith(sandbox.root_url)
    assert shown["configuration"]["oauth.api.secret"] == "********"
    assert [h["trigger"] for h in shown["history"]] == ["issue_token", "redirect"]
    assert {"trigger", "source", "dest", "at"} <= set(shown["history"][0])

    location = cli.consent(shown["redirect_url"])
    forged = location.replace("state=", "state=x", 1)
    rejected, text = cli.many(("callback", forged), ("show", attempt_id))
    assert rejected.returncode == 2
    assert rejected.stderr.strip().endswith("provision: error: callback rejected: unknown state")
    assert text.returncode == 0 and "consent URL" in text.stdout and shown["redirect_url"] in text.stdout

    applied = cli("callback", location).stdout
    assert applied.startswith("applied:") and attempt_id in applied and "CALLBACK_RECEIVED" in applied
    worker = cli("worker", "--once")
    assert "worker: claimed 1, advanced 1, retrying 0, failed 0" in worker.stderr
    # One report line per transition: time, short id, name, from -> to, duration, outcome.
    line = worker.stdout.strip()
    assert len(worker.stdout.splitlines()) == 1, worker.stdout
    assert line.split(" ")[1:6] == [attempt_id[:8], "QBO_Instance", "CALLBACK_RECEIVED", "->", "PROVISIONED"]
    assert line.endswith(" advanced") and line[:20].endswith("Z") and line[10] == "T"

    done, again, text = cli.many(("--json", "show", attempt_id), ("callback", location), ("show", attempt_id))
    done_json = json.loads(done.stdout)
    assert done_json["state"] == "PROVISIONED"
    assert done_json["redirect_url"] is None and done_json["instance_id"]
    assert [h["dest"] for h in done_json["history"]] == ["TOKEN_ISSUED", "REDIRECTED", "CALLBACK_RECEIVED",
                                                         "PROVISIONED"]
    for key in ("id", "element", "flow", "name", "tags", "failure_reason", "last_error", "created_at",
                "updated_at", "next_run_at", "deadline_at"):
        assert key in done_json
    # The same redirect twice is harmless.
    assert again.returncode == 0 and again.stdout.startswith("duplicate:")
    assert "PROVISIONED" in text.stdout and "consent URL" not in text.stdout

    creates = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"].endswith("/instances")]
    assert len(creates) == 1
    body = creates[0]["body"]
    assert set(body["providerData"]) == {"oauth_token", "realmId", "oauth_verifier", "secret", "state",
                                         "dataSource"}
    assert {"oauth.api.key", "oauth.api.secret", "oauth.callback.url"} <= set(body["configuration"])
    assert body["configuration"]["oauth.api.secret"] == cli.SECRET
    assert body["configuration"]["oauth.callback.url"] == cli.CALLBACK_URL
    assert "For Docs" in body["tags"] and body["name"] == "QBO_Instance"


def _run_on_tty(cli: Any, *args: str) -> str:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(cli.argv(*args), env=cli.env, stdout=follower, stderr=subprocess.PIPE,
                              timeout=30, text=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the child side is closed (Linux)
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert proc.returncode == 0, proc.stderr
    out = b"".join(chunks).decode().replace("\r\n", "\n")
    cli.outputs += [out, proc.stderr]
    return out


def test_list_cancel_restart(cli: Any) -> None:
    oauth1 = ("start", "--element", "quickbooks", "--api-key", "k", "--api-secret", cli.SECRET,
              "--callback-url", cli.CALLBACK_URL)
    started = cli.many((*oauth1, "--name", "first"), (*oauth1, "--name", "second"))
    first, second = (r.stdout.strip() for r in started)
    cancelled = cli("cancel", second).stdout.strip()
    assert cancelled == f"cancelled: attempt {second} is FAILED (cancelled)"

    plain, as_json, failed, old, again, by_reason, other_reason = cli.many(
        ("list",), ("--json", "list"), ("list", "--state", "failed", "--json"),
        ("list", "--older-than", "1h"),
        ("cancel", second), ("--json", "list", "--reason", "cancelled"),
        ("--json", "list", "--reason", "invalid_database"))
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "element", "flow", "state", "name", "created", "updated",
                                    "failure_reason", "retries", "last_error", "next_retry", "customer",
                                    "health"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:-1]}
    assert rows[first][3:5] == ["NEW", "first"] and rows[first][7:] == ["-", "0", "-", "-", "-", "-"]
    assert rows[second][3:5] == ["FAILED", "second"] and rows[second][7] == "cancelled"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[first][5])  # the one timestamp format
    assert [a["id"] for a in json.loads(by_reason.stdout)["attempts"]] == [second]
    assert json.loads(other_reason.stdout)["attempts"] == []
    assert lines[-1].split("\t") == ["counts", "NEW=1", "FAILED=1"]
    data = json.loads(as_json.stdout)
    assert data["counts"] == {"NEW": 1, "FAILED": 1}
    assert {a["id"] for a in data["attempts"]} == {first, second}
    created = [a["created_at"] for a in data["attempts"]]
    assert created == sorted(created, reverse=True)  # newest first
    assert [a["id"] for a in json.loads(failed.stdout)["attempts"]] == [second]
    assert old.stdout.splitlines()[1:] == ["counts\tNEW=1\tFAILED=1"]  # header, no rows, counts
    assert again.returncode == 2 and "provision: error: cannot cancel attempt" in again.stderr

    # On a terminal: aligned columns and a readable counts line.
    table_text = _run_on_tty(cli, "list")
    assert "\t" not in table_text
    header = table_text.splitlines()[0]
    assert header.split() == ["id", "element", "flow", "state", "name", "created", "updated",
                              "failure_reason", "retries", "last_error", "next_retry", "customer", "health"]
    assert header.index("element") == 38  # 36-character ids plus two spaces: the columns line up
    assert "counts (2 attempts): NEW=1 FAILED=1" in table_text

    restarted = cli.json("restart", second)
    assert restarted["state"] == "NEW"
    twice, shown, unknown = cli.many(("restart", second), ("--json", "show", second), ("cancel", "0" * 36))
    assert twice.returncode == 2 and "cannot restart" in twice.stderr
    history = json.loads(shown.stdout)["history"]
    assert [(h["trigger"], h["source"], h["dest"]) for h in history] == [("fail", "NEW", "FAILED"),
                                                                         ("restart", "FAILED", "NEW")]
    assert unknown.returncode == 2 and unknown.stderr.startswith("provision: error: no attempt")


def test_quick_flow_json_start_and_idempotency(cli: Any) -> None:
    args = ("start", "--element", "quickbooks", "--flow", "quick", "--name", "Q", "--api-key", "k",
            "--api-secret", cli.SECRET, "--config", "oauth.user.token=tok", "--config",
            "oauth.user.token.secret=toksecret", "--config", "quickbooks.realm.id=1",
            "--idempotency-key", "o-42", "--sandbox-company")
    started = json.loads(cli(*args, "--json").stdout)  # global options also work after the verb
    assert started["state"] == "NEW" and len(started["id"]) == 36
    assert cli(*args).stdout.strip() == started["id"]
    worker = cli("worker", "--once", "--concurrency", "2", "--quiet")
    assert "worker: claimed 1, advanced 1, retrying 0, failed 0" in worker.stderr
    assert worker.stdout == "" and "started" not in worker.stderr  # --quiet: the summary only
    shown, text = cli.many(("--json", "show", started["id"]), ("show", started["id"]))
    data = json.loads(shown.stdout)
    assert data["state"] == "PROVISIONED" and data["flow"] == "quick"
    assert data["configuration"]["oauth.user.token"] == "********"
    assert data["configuration"]["oauth.user.token.secret"] == "********"
    assert "toksecret" not in shown.stdout + text.stdout and "quick_provision" in text.stdout


def test_show_masks_credentials_whatever_their_element_calls_them(cli: Any) -> None:
    """Keys other elements use for credentials are masked by ``show`` (text and JSON) too."""
    secrets = {"ssh.passphrase": "pass-phrase-1", "private_key": "-----BEGIN KEY-----x",
               "credentials": "c-r-e-d-s", "db.pwd": "hunter2-pwd", "request.signature": "sig-nature-9",
               "client.pem": "pem-body-77"}
    args = [a for k, v in secrets.items() for a in ("--config", f"{k}={v}")]
    attempt_id = cli("start", "--element", "quickbooks", "--flow", "oauth2", "--name", "Masked",
                     "--api-key", "k", "--api-secret", cli.SECRET, "--callback-url", cli.CALLBACK_URL,
                     "--offline", "--config", "region=eu-west", *args).stdout.strip()
    shown, text = cli.many(("--json", "show", attempt_id), ("show", attempt_id))
    config = json.loads(shown.stdout)["configuration"]
    assert {k: config[k] for k in secrets} == dict.fromkeys(secrets, "********")
    assert config["region"] == "eu-west"  # an ordinary entry is still shown
    for value in secrets.values():
        assert value not in shown.stdout + shown.stderr + text.stdout + text.stderr

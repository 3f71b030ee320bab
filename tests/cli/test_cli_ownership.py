"""Issue 15 must-haves 2, 3 and 6 through the real ``provision`` command against the sandbox.

- a quick OAuth2 start (``authentication.type=oauth2`` + a refresh token) is provisioned and renewed
  by the refresh-token grant, once, with the rotated token pushed to the instance;
- ``--renewal`` and ``show`` carry the renewal owner;
- a wrong ``ELEMENTS_USER_SECRET`` parks the queue: ``worker --once`` exits 1 naming the variable, no
  attempt is failed or charged, and once the secret is fixed all of them are PROVISIONED.
"""
from __future__ import annotations

import time
from typing import Any

from sandbox import Sandbox

REALM = "123146096291789"
REFRESH_TOKEN = "AB11-caller-refresh-token"


def quick_oauth2(cli: Any, name: str, *extra: str, refresh_token: str = REFRESH_TOKEN,
                 realm: str = REALM) -> tuple[str, ...]:
    """The ``start`` arguments of a quick OAuth2 QuickBooks start (elements-api.md §4e)."""
    return ("start", "--element", "quickbooks", "--flow", "quick", "--name", name,
            "--api-key", "dev-key", "--api-secret", cli.SECRET, "--sandbox-company",
            "--config", "authentication.type=oauth2", "--config", f"oauth.user.refresh_token={refresh_token}",
            "--config", f"quickbooks.realm.id={realm}", *extra)


def test_quick_oauth2_is_provisioned_then_renewed_once_by_the_engine(cli: Any, sandbox: Sandbox) -> None:
    # Obtained 58 minutes ago: inside the engine's lead, before the platform's own due time.
    obtained_ms = int((time.time() - 58 * 60) * 1000)
    attempt_id = cli(*quick_oauth2(cli, "QBO OAuth2", "--config",
                                   f"oauth.user.refresh_time={obtained_ms}")).stdout.strip()
    worker = cli("worker", "--once")
    # Three steps: provision and renew advance; the push of the rotated token stays in PROVISIONED.
    assert "worker: claimed 3, advanced 2, retrying 0, failed 0, waiting 1\n" in worker.stderr

    shown = cli.json("show", attempt_id)
    assert shown["state"] == "PROVISIONED" and shown["renewal_owner"] == "engine"
    assert shown["renewals"] == 1
    assert [h["trigger"] for h in shown["history"]] == ["quick_provision", "renew"]
    assert shown["history"][1]["note"] == "refresh-token grant"
    assert "renewal owner" in cli("show", attempt_id).stdout

    created = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"].endswith("/instances")]
    assert len(created) == 1 and created[0]["body"]["externalAuthentication"] == "initial"
    config = created[0]["body"]["configuration"]
    assert config["authentication.type"] == "oauth2" and config["oauth.user.refresh_interval"] == "3600"
    assert "oauth.user.token.secret" not in config

    # The caller's refresh token was presented exactly once, by the engine; the rotated one reached
    # the instance with the new refresh_time, which moves the platform's schedule forward.
    assert [(token, who) for token, who, _ in sandbox.refresh_presentations()] == [(REFRESH_TOKEN, "client")]
    instance = sandbox.store.instances[int(shown["instance_id"])]
    assert instance.configuration["oauth.user.refresh_token"] not in ("", REFRESH_TOKEN)
    assert int(instance.configuration["oauth.user.refresh_time"] or 0) > obtained_ms
    assert sandbox.platform_refresh() == []  # nothing is due for the platform now


def test_quick_oauth2_names_exactly_its_missing_entries(cli: Any) -> None:
    missing = cli("start", "--element", "quickbooks", "--flow", "quick", "--name", "x", "--api-key", "k",
                  "--api-secret", cli.SECRET, "--config", "authentication.type=oauth2", expect=2)
    assert "needs oauth.user.refresh_token, quickbooks.realm.id" in missing.stderr
    assert "token.secret" not in missing.stderr
    oauth1 = cli("start", "--element", "quickbooks", "--flow", "quick", "--name", "x", "--api-key", "k",
                 "--api-secret", cli.SECRET, "--config", f"quickbooks.realm.id={REALM}", expect=2)
    assert "needs oauth.user.token, oauth.user.token.secret" in oauth1.stderr
    bad = cli(*quick_oauth2(cli, "x", "--renewal", "both"), expect=2)
    assert "--renewal" in bad.stderr


def test_the_renewal_owner_is_settable_and_shown(cli: Any) -> None:
    platform_id = cli(*quick_oauth2(cli, "watched", "--renewal", "platform")).stdout.strip()
    consent_id = cli.start_oauth1()
    shown = {a: cli.json("show", a)["renewal_owner"] for a in (platform_id, consent_id)}
    assert shown == {platform_id: "platform", consent_id: "platform"}


def test_a_wrong_platform_secret_parks_the_queue_and_loses_no_attempt(cli: Any, sandbox: Sandbox) -> None:
    started = cli.many(*(quick_oauth2(cli, f"company {i}", refresh_token=f"AB11-token-{i}",
                                      realm=f"{REALM}{i}") for i in range(5)))
    ids = [p.stdout.strip() for p in started]
    assert [p.returncode for p in started] == [0] * 5, [p.stderr for p in started]
    assert len(set(ids)) == 5

    wrong = type(cli)(cli.exe, cli.db_url, {**cli.env, "ELEMENTS_USER_SECRET": "typo-user-secret"})
    parked = wrong("worker", "--once", expect=1)
    assert "ELEMENTS_USER_SECRET" in parked.stderr and "queue parked" in parked.stderr
    assert parked.stderr.count("queue parked: the platform rejected") == 2  # the log line and the exit line
    cli.outputs += wrong.outputs
    for attempt_id in ids:
        shown = cli.json("show", attempt_id)
        # Not failed, not charged: no history row, no failure counted, still due.
        assert (shown["state"], shown["failures"], shown["history"]) == ("NEW", 0, [])
        assert shown["failure_reason"] is None

    fixed = cli("worker", "--once")
    assert "worker: claimed 5, advanced 5, retrying 0, failed 0\n" in fixed.stderr
    assert {cli.json("show", a)["state"] for a in ids} == {"PROVISIONED"}

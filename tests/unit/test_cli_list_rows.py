"""``provision list`` rows: a retrying attempt shows its retries, error kind and next retry (issue 18)."""
from __future__ import annotations

from datetime import timedelta

from unit.fakes import T0, make_attempt

from engine.cli.output import LIST_COLUMNS, iso, list_dict, list_row
from states.model import Flow, State


def test_a_retrying_attempt_does_not_look_healthy() -> None:
    retrying = make_attempt(State.NEW, Flow.OAUTH2, failures=3, next_run_at=T0 + timedelta(seconds=90),
                            last_error={"kind": "unavailable", "message": "HTTP 503",
                                        "provider_token": "tok-leak"})
    row = dict(zip(LIST_COLUMNS, list_row(retrying), strict=True))
    assert (row["state"], row["retries"], row["last_error"]) == ("NEW", "3", "unavailable")
    assert row["next_retry"] == (T0 + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    healthy = dict(zip(LIST_COLUMNS, list_row(make_attempt(State.NEW, Flow.OAUTH2)), strict=True))
    assert (healthy["retries"], healthy["last_error"], healthy["next_retry"]) == ("0", "-", "-")
    data = list_dict([retrying], {"NEW": 1})["attempts"][0]
    assert data["failures"] == 3 and data["next_run_at"] == iso(retrying.next_run_at)
    assert data["next_run_at"].endswith("Z") and data["last_error"]["provider_token"] == "********"
    assert {"id", "element", "flow", "state", "name", "tags", "created_at", "updated_at",
            "failure_reason", "instance_id"} <= set(data)  # the old keys stay

"""The callback judge (``states.judge``) on its own: every verdict and reason, no database.

Whether the one-statement SQL guard agrees with it is ``tests/integration/test_judge_agrees_with_sql``.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from states.attempt import Attempt
from states.judge import Verdict, fast_path_flow, judge_callback, may_be_duplicate
from states.model import FailureReason, Flow, State

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


WAITING = Attempt(id="a1", element_key="quickbooks", flow=Flow.OAUTH1, name="Acme", state=State.REDIRECTED,
                  version=3, created_at=NOW, updated_at=NOW, deadline_at=NOW + timedelta(minutes=5),
                  state_nonce_hash=sha("a1.n"), request_token_hash=sha("tok"))
GENUINE = {"state": "a1.n", "oauth_token": "tok", "oauth_verifier": "v", "realmId": "r"}


@pytest.mark.parametrize(("attempt", "params", "seen", "verdict"), [
    (WAITING, GENUINE, False, Verdict("applied", None, State.CALLBACK_RECEIVED)),
    (WAITING, GENUINE, True, Verdict("applied", None, State.CALLBACK_RECEIVED)),  # a fresh nonce: not seen
    (replace(WAITING, state=State.CALLBACK_RECEIVED), GENUINE, True,
     Verdict("duplicate", "same callback already applied")),
    (replace(WAITING, state=State.NEW), GENUINE, False, Verdict("pending", "attempt not redirected yet")),
    (replace(WAITING, state=State.TOKEN_ISSUED), GENUINE, False,
     Verdict("pending", "attempt not redirected yet")),
    (replace(WAITING, state=State.PROVISIONED), GENUINE, False,
     Verdict("rejected", "attempt is PROVISIONED; its state was already used")),
    (replace(WAITING, state=State.FAILED, failure_reason=FailureReason.CALLBACK_TIMEOUT.value), GENUINE,
     False, Verdict("rejected", "callback deadline passed")),
    (WAITING, {**GENUINE, "state": "a1.forged"}, False, Verdict("rejected", "state does not match")),
    (replace(WAITING, state_nonce_hash=None), GENUINE, False, Verdict("rejected", "state does not match")),
    (replace(WAITING, deadline_at=NOW), GENUINE, False, Verdict("rejected", "callback deadline passed")),
    (WAITING, {**GENUINE, "oauth_token": "other"}, False,
     Verdict("rejected", "oauth_token is not the request token issued")),
    (WAITING, {"state": "a1.n", "oauth_token": "tok"}, False,
     Verdict("rejected", "missing parameter(s) oauth_verifier, realmId")),
    (replace(WAITING, flow=Flow.OAUTH2), {"state": "a1.n", "code": ""}, False,
     Verdict("rejected", "missing parameter(s) code, realmId")),
    # Intuit always names the company (realmId); another element's OAuth2 callback needs only the code.
    (replace(WAITING, flow=Flow.OAUTH2), {"state": "a1.n", "code": "c"}, False,
     Verdict("rejected", "missing parameter(s) realmId")),
    (replace(WAITING, flow=Flow.OAUTH2), {"state": "a1.n", "code": "c", "realmId": "r"}, False,
     Verdict("applied", None, State.CALLBACK_RECEIVED)),
    (replace(WAITING, flow=Flow.OAUTH2, element_key="hubspot"), {"state": "a1.n", "code": "c"}, False,
     Verdict("applied", None, State.CALLBACK_RECEIVED)),
    (WAITING, {"state": "a1.n", "error": "access_denied"}, False,
     Verdict("applied", "user_denied", State.FAILED, FailureReason.USER_DENIED)),
    (WAITING, {"state": "a1.n", "error": "server_error"}, False,
     Verdict("applied", "permanent_error", State.FAILED, FailureReason.PERMANENT_ERROR)),
])
def test_verdicts(attempt: Attempt, params: dict[str, str], seen: bool, verdict: Verdict) -> None:
    assert judge_callback(attempt, params, NOW, sha, applied_before=seen) == verdict


def test_a_provider_error_is_recorded_without_the_callback_parameters() -> None:
    verdict = judge_callback(WAITING, {"state": "a1.n", "error": "access_denied"}, NOW, sha)
    assert verdict.error is not None and verdict.error["kind"] == "user_denied"
    assert "error=access_denied" in verdict.error["message"]


def test_the_inbox_is_consulted_only_when_a_duplicate_is_possible() -> None:
    assert not may_be_duplicate(WAITING, GENUINE, sha)
    assert may_be_duplicate(replace(WAITING, state=State.CALLBACK_RECEIVED), GENUINE, sha)
    assert may_be_duplicate(WAITING, {**GENUINE, "state": "a1.other"}, sha)


@pytest.mark.parametrize(("params", "flow"), [
    (GENUINE, Flow.OAUTH1),
    ({"state": "a1.n", "code": "c", "realmId": "r"}, Flow.OAUTH2),
    ({"state": "a1.n", "code": "c"}, None),  # without realmId: judged after the read (the element decides)
    ({"state": "a1.n", "code": ""}, None),
    ({"state": "a1.n", "code": "c", "error": "access_denied"}, None),
    ({"state": "a1.n", "oauth_token": "tok", "realmId": "r"}, None),
])
def test_fast_path_flow(params: dict[str, str], flow: Flow | None) -> None:
    assert fast_path_flow(params) is flow

"""The one-statement callback guard (SQL) and the callback judge (Python) are the same rule.

``engine.core.callbacks`` applies a complete callback with one guarded UPDATE that never reads
the attempt (``persistence.statements.apply_callback_update``); every other decision is
``states.judge.judge_callback``'s. For generated attempts (state, flow, stored nonce hash,
deadline before/at/after now, OAuth1 request token, failure reason) and callbacks (matching or
foreign state, missing or empty parameters, provider errors), the attempt is stored, the guard
statement runs as the fast path would run it, and the statement must apply exactly when the
judge says ``applied`` (to CALLBACK_RECEIVED) for a callback of the attempt's flow. Runs on
SQLite and PostgreSQL, derandomized so CI sees the same cases every time.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from testkit import TEST_KEY

from engine.security.crypto import digest
from engine.wiring import open_repository
from persistence import NewCallback, Repository
from states import Attempt, Flow, HistoryEntry, State
from states.judge import fast_path_flow, judge_callback
from states.model import FailureReason, Trigger

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "request-token-issued"
CASES = settings(max_examples=100, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Case:
    """One generated attempt and one callback for it (``params['state']`` names the attempt)."""

    attempt: Attempt
    params: dict[str, str]


# Ways a callback or its attempt may differ from a genuine callback for a waiting attempt.
CHANGES = (
    "foreign state sent", "no nonce stored", "other nonce stored", "deadline passed", "deadline is now",
    "no deadline", "state NEW", "state TOKEN_ISSUED", "state CALLBACK_RECEIVED", "state PROVISIONED",
    "state FAILED", "timed out before", "other token sent", "no token stored", "token empty",
    "verifier missing", "realmId empty", "code empty", "code missing", "code added", "oauth params added",
    "error access_denied", "error server_error", "flow quick",
)


@st.composite
def cases(draw: st.DrawFn) -> Callable[[str], Case]:
    """A case to build for a fresh attempt id (ids are unique per example; the draws are not).

    A genuine callback of an OAuth1 or OAuth2 attempt, with up to three ``CHANGES``: so most
    cases sit next to the boundary, and every check of the guard is crossed alone and combined.
    """
    flow = draw(st.sampled_from([Flow.OAUTH1, Flow.OAUTH2]))
    changes = set(draw(st.lists(st.sampled_from(CHANGES), max_size=3, unique=True)))
    if "flow quick" in changes:
        flow = Flow.QUICK
    state = next((State(c[6:]) for c in sorted(changes) if c.startswith("state ")), State.REDIRECTED)
    deadline: datetime | None = NOW + timedelta(minutes=10)
    for change, moment in (("no deadline", None), ("deadline is now", NOW),
                           ("deadline passed", NOW - timedelta(seconds=1))):
        if change in changes:
            deadline = moment
    params: dict[str, str] = {}
    if flow is Flow.OAUTH2 or "code added" in changes:
        params["code"] = "code-1"
    if flow is not Flow.OAUTH2 or "oauth params added" in changes:
        params.update(oauth_token=TOKEN, oauth_verifier="verifier-1", realmId="realm-1")
    edits = {"other token sent": ("oauth_token", "other-token"), "token empty": ("oauth_token", ""),
             "realmId empty": ("realmId", ""), "code empty": ("code", ""),
             "error access_denied": ("error", "access_denied"),
             "error server_error": ("error", "server_error")}
    for change, (name, value) in edits.items():
        if change in changes and (name in params or name == "error"):
            params[name] = value
    for change, name in (("verifier missing", "oauth_verifier"), ("code missing", "code")):
        if change in changes:
            params.pop(name, None)
    stored = None if "no nonce stored" in changes else "other" if "other nonce stored" in changes else "sent"

    def build(attempt_id: str) -> Case:
        sent = f"{attempt_id}.{'foreign' if 'foreign state sent' in changes else 'nonce'}"
        attempt = Attempt(
            id=attempt_id, element_key="quickbooks", flow=flow, name="Acme", state=state, version=3,
            created_at=NOW - timedelta(minutes=5), updated_at=NOW - timedelta(minutes=1), history_seq=2,
            next_run_at=deadline, deadline_at=deadline,
            state_nonce_hash=None if stored is None else digest(f"{attempt_id}.{stored}" if stored == "other"
                                                                else f"{attempt_id}.nonce"),
            request_token_hash=None if "no token stored" in changes else digest(TOKEN),
            failure_reason=FailureReason.CALLBACK_TIMEOUT.value if "timed out before" in changes else None,
            secrets={"config": {"oauth.api.secret": "planted-secret-123"}},
        )
        return Case(attempt, {"state": sent, **params})

    return build


@pytest.fixture
def repo(db_url: str) -> Iterator[Repository]:
    r = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    yield r
    r.engine.dispose()


def run_guard(repo: Repository, attempt: Attempt, params: dict[str, str], flow: Flow) -> bool:
    """The guarded statement, with the arguments ``CallbackReceiver._apply_at_once`` gives it."""
    entry = HistoryEntry(attempt.id, 0, Trigger.RECEIVE_CALLBACK.value, State.REDIRECTED.value,
                         State.CALLBACK_RECEIVED.value, NOW, duration_ms=0, worker="judge-test", outcome="ok",
                         tries=1, error=None, note="callback")
    return repo.apply_callback(
        attempt.id, flow=flow, nonce_hash=digest(params["state"]),
        token_hash=digest(params["oauth_token"]) if flow is Flow.OAUTH1 else None, now=NOW, entry=entry,
        callback=NewCallback(attempt.id, NOW, params, "fingerprint", "applied", None))


@CASES
@given(case=cases())
def test_the_sql_guard_applies_exactly_when_the_judge_says_applied(
        repo: Repository, case: Callable[[str], Case]) -> None:
    built = case(str(uuid.uuid4()))
    attempt, params = built.attempt, built.params
    stored, created = repo.insert_attempt(attempt)
    assert created
    verdict = judge_callback(stored, params, NOW, digest)
    flow = fast_path_flow(params)
    event(f"verdict {verdict.status}, fast path {'tried' if flow else 'skipped'}")
    if flow is None:
        # Not tried in SQL (a provider error or a missing parameter of the flow the parameters
        # name): the receiver reads the attempt and the judge alone decides.
        assert "error" in params or verdict.dest is not State.CALLBACK_RECEIVED or attempt.flow is not (
            Flow.OAUTH2 if "code" in params else Flow.OAUTH1)
        return
    applied = run_guard(repo, stored, params, flow)
    # The statement tries the callback as one of ``flow``; for an attempt of another flow it must
    # not apply, and the judge's verdict is then reached after reading the attempt.
    received = verdict.status == "applied" and verdict.dest is State.CALLBACK_RECEIVED
    expected = received and attempt.flow is flow
    assert applied == expected, (verdict, flow, attempt.state, attempt.flow, sorted(params))
    after = repo.get(attempt.id)
    assert after is not None
    if applied:
        assert (after.state, after.version, after.history_seq) == (State.CALLBACK_RECEIVED, 4, 3)
        assert after.secrets["callback"] == params
    else:
        assert (after.state, after.version) == (attempt.state, attempt.version)
        assert repo.callbacks(attempt.id) == []

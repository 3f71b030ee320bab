"""The callback judge: the ONE rule that decides what a provider callback does to an attempt.

``judge_callback`` is pure: it sees the attempt as read, the callback's parameters, the time, the
hash function and whether the inbox holds the same callback applied already. It answers
``applied`` (to CALLBACK_RECEIVED, or to FAILED when the provider redirected with an error),
``duplicate``, ``pending`` (the attempt has not committed its redirect yet) or ``rejected``, with
the reason. The receiver (``engine.core.callbacks``) acts on the verdict.

For speed the common case is applied by one guarded SQL statement without reading the attempt
(``persistence.statements.apply_callback_update``), for callbacks ``fast_path_flow`` accepts. That
guard is this rule restricted to such callbacks of the flow their parameters name;
``tests/integration/test_judge_agrees_with_sql`` shows on generated cases that the statement
applies exactly when the judge says ``applied`` (to CALLBACK_RECEIVED) for the attempt's flow.
A callback whose parameters name another flow (an OAuth1 attempt's callback carrying ``code``)
is never applied by the statement; the judge decides it after the read.
Only hashes are compared, in constant time, so timing reveals nothing that helps forge a state.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from states.attempt import Attempt
from states.elements import ELEMENTS, spec_for
from states.model import FailureReason, Flow, State

VerdictStatus = Literal["applied", "duplicate", "pending", "rejected"]
# The parameters a complete callback of each flow carries.
REQUIRED: dict[Flow, tuple[str, ...]] = {Flow.OAUTH1: ("oauth_token", "oauth_verifier", "realmId"),
                                         Flow.OAUTH2: ("code",)}
# Every element's extra callback parameters per flow: the fast path requires them all.
_ELEMENT_PARAMS: dict[Flow, tuple[str, ...]] = {
    flow: tuple(sorted({p for spec in ELEMENTS.values() for p in spec.callback_params.get(flow, ())}))
    for flow in REQUIRED}
NOT_REDIRECTED_YET = "attempt not redirected yet"
ALREADY_APPLIED = "same callback already applied"


@dataclass(frozen=True)
class Verdict:
    """What a callback does: ``status`` and ``reason``; for ``applied``, where the attempt goes.

    ``dest`` is CALLBACK_RECEIVED or FAILED (then with ``failure`` and the ``error`` to record).
    """

    status: VerdictStatus
    reason: str | None = None
    dest: State | None = None
    failure: FailureReason | None = None
    error: dict[str, Any] | None = field(default=None, compare=False)


def _same(left: str, right: str | None) -> bool:
    return hmac.compare_digest(left.encode(), (right or "").encode())


def state_matches(attempt: Attempt, params: Mapping[str, str], digest: Callable[[str], str]) -> bool:
    """True when the callback's ``state`` is the attempt's current nonce (by hash)."""
    return bool(attempt.state_nonce_hash) and _same(digest(params["state"]), attempt.state_nonce_hash)


def may_be_duplicate(attempt: Attempt, params: Mapping[str, str], digest: Callable[[str], str]) -> bool:
    """Whether the judge needs to know if the inbox holds this callback applied already.

    A REDIRECTED attempt whose current nonce matches cannot have applied this callback yet:
    applying one leaves REDIRECTED, and coming back needs a new redirect with a new nonce. So
    the inbox lookup (a query) is needed only otherwise.
    """
    return not (attempt.state is State.REDIRECTED and state_matches(attempt, params, digest))


def judge_callback(attempt: Attempt, params: Mapping[str, str], now: datetime, digest: Callable[[str], str],
                   *, applied_before: bool = False) -> Verdict:
    """The verdict on callback ``params`` (with a ``state``) for ``attempt`` at ``now``.

    ``applied_before``: the inbox holds an applied callback with the same parameters (only
    consulted when ``may_be_duplicate``).
    """
    matches = state_matches(attempt, params, digest)
    if not (attempt.state is State.REDIRECTED and matches) and applied_before:
        return Verdict("duplicate", ALREADY_APPLIED)
    if attempt.state in (State.NEW, State.TOKEN_ISSUED):
        return Verdict("pending", NOT_REDIRECTED_YET)
    if attempt.state is not State.REDIRECTED:
        if attempt.failure_reason == FailureReason.CALLBACK_TIMEOUT.value:
            return Verdict("rejected", "callback deadline passed")
        return Verdict("rejected", f"attempt is {attempt.state.value}; its state was already used")
    if not matches:
        return Verdict("rejected", "state does not match")
    if attempt.deadline_at is not None and now >= attempt.deadline_at:
        return Verdict("rejected", "callback deadline passed")
    if attempt.flow is Flow.OAUTH1 and "oauth_token" in params and not _same(
            digest(params["oauth_token"]), attempt.request_token_hash):
        return Verdict("rejected", "oauth_token is not the request token issued")
    if "error" in params:
        error = params["error"][:100]
        reason = FailureReason.USER_DENIED if error == "access_denied" else FailureReason.PERMANENT_ERROR
        info = {"kind": reason.value, "message": f"provider redirected with error={error}",
                "hint": "The user did not approve; start a new attempt if they want to connect."}
        return Verdict("applied", reason.value, State.FAILED, reason, info)
    extra = spec_for(attempt.element_key).callback_params.get(attempt.flow, ())
    required = (*REQUIRED.get(attempt.flow, ()), *extra)
    missing = [p for p in required if not params.get(p)]
    if missing:
        return Verdict("rejected", f"missing parameter(s) {', '.join(missing)}")
    return Verdict("applied", None, State.CALLBACK_RECEIVED)


def fast_path_flow(params: Mapping[str, str]) -> Flow | None:
    """The flow whose complete callback ``params`` are, when the one-statement path may try it.

    None for a provider error or a callback missing a parameter of that flow: those are judged
    after reading the attempt. The SQL guard then also requires the attempt's flow to be this one.
    The statement does not know the element, so an OAuth2 callback without the ``realmId`` that
    QuickBooks requires (``ElementSpec.callback_params``) is judged after the read as well.
    """
    flow = Flow.OAUTH2 if "code" in params else Flow.OAUTH1
    if "error" in params or any(not params.get(p) for p in (*REQUIRED[flow], *_ELEMENT_PARAMS[flow])):
        return None
    return flow

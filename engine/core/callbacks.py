"""Provider callbacks: parse, match to an attempt, apply once (DESIGN §6).

Every callback lands in the ``callbacks`` inbox with its outcome. A callback is applied only when
the hash of its ``state`` matches a REDIRECTED attempt's stored hash, before the deadline, and
(OAuth1) its ``oauth_token`` is the issued request token. The common case is one guarded statement
that checks all this in the database (``_apply_at_once``); otherwise the attempt is read and
judged here. An exact repeat of an applied callback is a harmless duplicate; one for an attempt
still committing its redirect waits as ``pending``; anything else is rejected and changes nothing.
Only hashes are compared, so comparison timing reveals nothing that helps to forge a ``state``.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from engine.errors import CallbackRejectedError
from engine.security.crypto import digest
from persistence.inbox import NewCallback
from states.attempt import Attempt, HistoryEntry
from states.model import FailureReason, Flow, State, Trigger

if TYPE_CHECKING:
    from engine.core.facade import Engine

log = logging.getLogger(__name__)

MAX_CALLBACK_CHARS = 8192
MAX_VALUE_CHARS = 2048
KNOWN_PARAMS = frozenset(
    {"state", "oauth_token", "oauth_verifier", "realmId", "dataSource", "code", "error", "error_description"}
)
_BAD_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
REQUIRED = {Flow.OAUTH1: ("oauth_token", "oauth_verifier", "realmId"), Flow.OAUTH2: ("code",)}


@dataclass(frozen=True)
class CallbackOutcome:
    """What happened to a callback: ``applied``, ``duplicate`` or ``pending``."""

    status: str
    attempt_id: str | None
    state: State | None
    reason: str | None = None


def parse_callback(url_or_params: str | Mapping[str, Any]) -> dict[str, str]:
    """The callback's query parameters as a dict; raises ``CallbackRejectedError`` on bad input."""
    if isinstance(url_or_params, str):
        if len(url_or_params) > MAX_CALLBACK_CHARS:
            raise CallbackRejectedError(f"callback longer than {MAX_CALLBACK_CHARS} characters")
        text = url_or_params.strip()
        try:
            query = urlsplit(text).query if ("?" in text or "://" in text) else text
        except ValueError:  # e.g. "http://[bad" (an unbalanced IPv6 bracket) from a hostile caller
            raise CallbackRejectedError("not a valid URL") from None
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
        except ValueError:
            raise CallbackRejectedError("too many query parameters") from None
    elif isinstance(url_or_params, Mapping):
        if len(url_or_params) > 50:
            raise CallbackRejectedError("too many query parameters")
        pairs = []
        for k, v in url_or_params.items():
            values = v if isinstance(v, (list, tuple)) else [v]
            pairs.extend((str(k), str(x)) for x in values)
    else:
        raise CallbackRejectedError("callback must be a URL or a mapping of query parameters")
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in KNOWN_PARAMS:
            continue  # providers add parameters we do not use; ignore them rather than store them
        if key in params:
            raise CallbackRejectedError(f"parameter {key!r} appears more than once")
        if len(value) > MAX_VALUE_CHARS or _BAD_CHAR_RE.search(value):
            # Control characters and lone surrogates (not encodable as UTF-8) have no place in a
            # provider's parameters, and would break hashing and storage further on.
            raise CallbackRejectedError(f"parameter {key!r} is too long or contains control characters")
        params[key] = value
    if not params.get("state"):
        raise CallbackRejectedError("no 'state' parameter: not a callback of this engine")
    return params


def _canonical(params: Mapping[str, str]) -> str:
    return digest(json.dumps(sorted(params.items())))


class CallbackHandler:
    """Applies callbacks for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.repo = engine.repo

    def receive(self, url_or_params: str | Mapping[str, Any]) -> CallbackOutcome:
        """Record and apply one callback; raises ``CallbackRejectedError`` (after recording it)."""
        now = self.engine.now()
        try:
            params = parse_callback(url_or_params)
        except CallbackRejectedError as exc:
            self._reject(None, None, None, exc.reason)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a mapping whose values cannot be str()-ed
            self._reject(None, None, None, f"malformed callback ({type(exc).__name__})")
            raise CallbackRejectedError(f"malformed callback ({type(exc).__name__})") from None
        return self._apply_at_once(params, now) or self._process(params, existing_id=None)

    def _apply_at_once(self, params: dict[str, str], now: Any) -> CallbackOutcome | None:
        """The common case, a complete callback for a waiting attempt, in one guarded write.

        The guard checks in the database what ``_decide`` checks after reading the row (state
        REDIRECTED, nonce, deadline, flow, request token), comparing hashes only. When it does
        not match, nothing was written and ``_process`` reads the attempt to apply, defer or
        reject the callback with its reason. Saves the read, a decryption and an encryption.
        """
        flow = Flow.OAUTH2 if "code" in params else Flow.OAUTH1
        attempt_id = params["state"].split(".", 1)[0]
        if "error" in params or len(attempt_id) > 36 or any(not params.get(p) for p in REQUIRED[flow]):
            return None
        entry = HistoryEntry(attempt_id, 0, Trigger.RECEIVE_CALLBACK.value, State.REDIRECTED.value,
                             State.CALLBACK_RECEIVED.value, now, duration_ms=0, worker=self.engine.worker_id,
                             outcome="ok", tries=1, error=None, note="callback")
        applied = self.repo.apply_callback(
            attempt_id, flow=flow, nonce_hash=digest(params["state"]),
            token_hash=digest(params["oauth_token"]) if flow is Flow.OAUTH1 else None, now=now, entry=entry,
            callback=NewCallback(attempt_id, now, params, _canonical(params), "applied", None))
        if not applied:
            return None
        self.engine.wake()
        return CallbackOutcome("applied", attempt_id, State.CALLBACK_RECEIVED)

    def apply_pending(self, attempt_id: str) -> None:
        """Apply callbacks that arrived before the attempt's redirect was committed."""
        for row in self.repo.callbacks(attempt_id, status="pending"):
            params = self.repo.codec.open(row.params) if row.params else {}
            try:
                self._process(params, existing_id=row.id)
            except CallbackRejectedError:
                pass  # recorded on the inbox row by _process

    def reject_pending(self, attempt_id: str, reason: str) -> None:
        """Settle callbacks still waiting for a redirect that will never come (the attempt failed)."""
        for row in self.repo.callbacks(attempt_id, status="pending"):
            log.info("pending callback %s of attempt %s rejected: %s", row.id, attempt_id, reason)
            self.repo.update_callback(row.id, "rejected", reason)

    def _reject(self, attempt_id: str | None, params: dict[str, str] | None, existing_id: int | None,
                reason: str) -> None:
        log.warning("callback rejected: %s (attempt %s)", reason, attempt_id or "-")
        if existing_id is not None:
            self.repo.update_callback(existing_id, "rejected", reason)
        else:
            self.repo.record_callback(NewCallback(attempt_id, self.engine.now(), params,
                                                  _canonical(params) if params else None, "rejected", reason))

    def _process(self, params: dict[str, str], existing_id: int | None) -> CallbackOutcome:
        state_param = params["state"]
        attempt_id = state_param.split(".", 1)[0]
        for _ in range(5):  # re-read and retry when a worker commits between our read and write
            attempt = self.repo.get(attempt_id) if len(attempt_id) <= 36 else None
            if attempt is None:
                self._reject(None, params, existing_id, "unknown state")
                raise CallbackRejectedError("unknown state")
            outcome = self._decide(attempt, params, existing_id)
            if outcome is not None:
                return outcome
        raise CallbackRejectedError("attempt keeps changing; try again", attempt_id=attempt_id)

    def _decide(
        self, attempt: Attempt, params: dict[str, str], existing_id: int | None
    ) -> CallbackOutcome | None:
        now = self.engine.now()
        state_matches = bool(attempt.state_nonce_hash) and hmac.compare_digest(
            digest(params["state"]).encode(), (attempt.state_nonce_hash or "").encode())
        # A REDIRECTED attempt whose current nonce matches cannot have applied this callback yet:
        # applying one leaves REDIRECTED, and coming back needs a new redirect with a new nonce.
        # So the inbox lookup is needed only otherwise (it costs a query per callback).
        if not (attempt.state is State.REDIRECTED and state_matches) and self._already_applied(
            attempt, params
        ):
            self._record(attempt, params, existing_id, "duplicate", "same callback already applied")
            return CallbackOutcome("duplicate", attempt.id, attempt.state, "same callback already applied")
        if attempt.state in (State.NEW, State.TOKEN_ISSUED):
            if existing_id is None:
                self._record(attempt, params, None, "pending", "attempt not redirected yet")
            return CallbackOutcome("pending", attempt.id, attempt.state, "attempt not redirected yet")
        if attempt.state is not State.REDIRECTED:
            reason = (
                "callback deadline passed"
                if attempt.failure_reason == FailureReason.CALLBACK_TIMEOUT.value
                else f"attempt is {attempt.state.value}; its state was already used"
            )
            self._reject(attempt.id, params, existing_id, reason)
            raise CallbackRejectedError(reason, attempt_id=attempt.id)
        if not state_matches:
            self._reject(attempt.id, params, existing_id, "state does not match")
            raise CallbackRejectedError("state does not match", attempt_id=attempt.id)
        if attempt.deadline_at is not None and now >= attempt.deadline_at:
            self._reject(attempt.id, params, existing_id, "callback deadline passed")
            raise CallbackRejectedError("callback deadline passed", attempt_id=attempt.id)
        if attempt.flow is Flow.OAUTH1 and "oauth_token" in params and not hmac.compare_digest(
            digest(params["oauth_token"]).encode(), (attempt.request_token_hash or "").encode()
        ):
            self._reject(attempt.id, params, existing_id, "oauth_token is not the request token issued")
            raise CallbackRejectedError("oauth_token is not the request token issued", attempt_id=attempt.id)
        if "error" in params:
            error = params["error"][:100]
            reason = FailureReason.USER_DENIED if error == "access_denied" else FailureReason.PERMANENT_ERROR
            info = {"kind": reason.value, "message": f"provider redirected with error={error}",
                    "hint": "The user did not approve; start a new attempt if they want to connect."}
            ok = self._commit(attempt, params, existing_id, Trigger.FAIL, State.FAILED, now,
                              failure_reason=reason.value, error=info, callback_secrets=None)
            return CallbackOutcome("applied", attempt.id, State.FAILED, reason.value) if ok else None
        missing = [p for p in REQUIRED.get(attempt.flow, ()) if not params.get(p)]
        if missing:
            reason_text = f"missing parameter(s) {', '.join(missing)}"
            self._reject(attempt.id, params, existing_id, reason_text)
            raise CallbackRejectedError(reason_text, attempt_id=attempt.id)
        ok = self._commit(
            attempt,
            params,
            existing_id,
            Trigger.RECEIVE_CALLBACK,
            State.CALLBACK_RECEIVED,
            now,
            failure_reason=None,
            error=None,
            callback_secrets=params,
        )
        if ok:
            self.engine.wake()
        return CallbackOutcome("applied", attempt.id, State.CALLBACK_RECEIVED) if ok else None

    def _already_applied(self, attempt: Attempt, params: dict[str, str]) -> bool:
        fingerprint = _canonical(params)
        return any(c.digest == fingerprint for c in self.repo.callbacks(attempt.id, status="applied"))

    def _record(self, attempt: Attempt, params: dict[str, str], existing_id: int | None, status: str,
                reason: str) -> None:
        if existing_id is not None:
            self.repo.update_callback(existing_id, status, reason)
        else:
            self.repo.record_callback(NewCallback(attempt.id, self.engine.now(), params, _canonical(params),
                                                  status, reason))

    def _commit(self, attempt: Attempt, params: dict[str, str], existing_id: int | None, trigger: Trigger,
                dest: State, now: Any, *, failure_reason: str | None, error: dict[str, Any] | None,
                callback_secrets: dict[str, str] | None) -> bool:
        entry = HistoryEntry.after(attempt, trigger.value, dest, now, worker=self.engine.worker_id,
                                   outcome="ok" if dest is not State.FAILED else "failed", error=error,
                                   note="callback")
        new_cb = None if existing_id is not None else NewCallback(attempt.id, now, params, _canonical(params),
                                                                  "applied", None)
        updates = [(existing_id, "applied", None)] if existing_id is not None else []
        return self.repo.commit_transition(
            attempt, entry, owner=None, now=now,
            next_run_at=now if dest is State.CALLBACK_RECEIVED else None,
            failure_reason=failure_reason, last_error=error, callback_secrets=callback_secrets,
            callback=new_cb, callback_updates=updates,
        )

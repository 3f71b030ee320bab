"""Provider callbacks: parse, match to an attempt, apply once (DESIGN §6).

Every callback that matches an attempt lands in the ``callbacks`` inbox with its outcome: its
``state`` hashes to the attempt's nonce, or names (by its id prefix) an attempt still committing
its redirect (``pending``), or repeats one applied before (``duplicate``). Forged and unknown
callbacks (no state, garbage, a state that matches no attempt) are counted by reason and logged,
never stored one row each: a flood of them must not grow the database (the web receiver also
rate-limits them per client address, ``engine.web.ratelimit``). What a callback does is decided
by ONE rule, ``states.judge.judge_callback``: applied only when the hash of its ``state`` matches a
REDIRECTED attempt's stored hash, before the deadline, and (OAuth1) its ``oauth_token`` is the
issued request token. The common case is one guarded statement that checks this rule in the
database (``_apply_at_once``); otherwise the attempt is read and judged. An exact repeat of an
applied callback is a harmless duplicate; one for an attempt still committing its redirect waits
as ``pending``; anything else is rejected and changes nothing.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.errors import CallbackRejectedError
from engine.security.crypto import digest
from persistence.repository import Repository
from persistence.writes import NewCallback, transition_write
from states.attempt import Attempt, HistoryEntry
from states.judge import (
    NOT_REDIRECTED_YET,
    Verdict,
    fast_path_flow,
    judge_callback,
    may_be_duplicate,
    state_matches,
)
from states.model import Flow, State, Trigger

log = logging.getLogger(__name__)

MAX_CALLBACK_CHARS = 8192
# Callbacks kept for an attempt whose redirect is not committed yet (``pending``): the genuine one,
# a repeat or two of the user's browser. More is somebody guessing with a known attempt id.
MAX_PENDING = 3
TOO_MANY_EARLY = "too many callbacks before the redirect"
MAX_VALUE_CHARS = 2048
KNOWN_PARAMS = frozenset(
    {"state", "oauth_token", "oauth_verifier", "realmId", "dataSource", "code", "error", "error_description"}
)
_BAD_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


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


class CallbackReceiver:
    """Records and applies provider callbacks against one repository.

    ``clock`` stamps inbox and history rows, ``worker_id`` names the writer in history and
    ``wake`` is called when an applied callback made a step due (the worker stops waiting).
    """

    def __init__(self, repo: Repository, *, clock: Callable[[], datetime], worker_id: str,
                 wake: Callable[[], None]) -> None:
        self.repo = repo
        self.clock = clock
        self.worker_id = worker_id
        self.wake = wake
        self._unmatched: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def unmatched_counts(self) -> dict[str, int]:
        """Callbacks refused without an inbox row since start, by reason (forged, unknown, malformed)."""
        with self._count_lock:
            return dict(self._unmatched)

    def _refuse_unmatched(self, reason: str) -> None:
        # Counted, not stored: one row per forged request would let anyone grow the database.
        with self._count_lock:
            self._unmatched[reason] += 1
        log.info("callback refused: %s (matches no attempt; not stored)", reason)

    def receive(self, url_or_params: str | Mapping[str, Any]) -> CallbackOutcome:
        """Record and apply one callback; raises ``CallbackRejectedError`` (recorded if it matched).

        A callback that matches no attempt is counted (``unmatched_counts``), not stored.
        """
        now = self.clock()
        try:
            params = parse_callback(url_or_params)
        except CallbackRejectedError as exc:
            self._refuse_unmatched(exc.reason)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a mapping whose values cannot be str()-ed
            self._refuse_unmatched(f"malformed callback ({type(exc).__name__})")
            raise CallbackRejectedError(f"malformed callback ({type(exc).__name__})") from None
        return self._apply_at_once(params, now) or self._process(params, existing_id=None)

    def _apply_at_once(self, params: dict[str, str], now: datetime) -> CallbackOutcome | None:
        """The common case, a complete callback for a waiting attempt, in one guarded write.

        The guard checks in the database what ``judge_callback`` decides after reading the row
        (state REDIRECTED, nonce, deadline, flow, request token), comparing hashes only. When it
        does not match, nothing was written and ``_process`` reads the attempt to apply, defer or
        reject the callback with its reason. Saves the read, a decryption and an encryption.
        """
        flow = fast_path_flow(params)
        attempt_id = params["state"].split(".", 1)[0]
        if flow is None or len(attempt_id) > 36:
            return None
        entry = HistoryEntry(attempt_id, 0, Trigger.RECEIVE_CALLBACK.value, State.REDIRECTED.value,
                             State.CALLBACK_RECEIVED.value, now, duration_ms=0, worker=self.worker_id,
                             outcome="ok", tries=1, error=None, note="callback")
        applied = self.repo.apply_callback(
            attempt_id, flow=flow, nonce_hash=digest(params["state"]),
            token_hash=digest(params["oauth_token"]) if flow is Flow.OAUTH1 else None, now=now, entry=entry,
            callback=NewCallback(attempt_id, now, params, _canonical(params), "applied", None))
        if not applied:
            return None
        self.wake()
        return CallbackOutcome("applied", attempt_id, State.CALLBACK_RECEIVED)

    def apply_pending(self, attempt_id: str) -> None:
        """Apply callbacks that arrived before the attempt's redirect was committed."""
        for row_id, params in self.repo.pending_callbacks(attempt_id):
            try:
                self._process(params, existing_id=row_id)
            except CallbackRejectedError:
                pass  # recorded on the inbox row by _process

    def reject_pending(self, attempt_id: str, reason: str) -> None:
        """Settle callbacks still waiting for a redirect that will never come (the attempt failed)."""
        for row in self.repo.callbacks(attempt_id, status="pending"):
            log.info("pending callback %s of attempt %s rejected: %s", row.id, attempt_id, reason)
            self.repo.update_callback(row.id, "rejected", reason)

    def _reject(self, attempt_id: str, params: dict[str, str], existing_id: int | None, reason: str) -> None:
        log.warning("callback rejected: %s (attempt %s)", reason, attempt_id)
        if existing_id is not None:
            self.repo.update_callback(existing_id, "rejected", reason)
        else:
            self.repo.record_callback(NewCallback(attempt_id, self.clock(), params, _canonical(params),
                                                  "rejected", reason))

    def _process(self, params: dict[str, str], existing_id: int | None) -> CallbackOutcome:
        state_param = params["state"]
        attempt_id = state_param.split(".", 1)[0]
        for _ in range(5):  # re-read and retry when a worker commits between our read and write
            attempt = self.repo.get(attempt_id) if len(attempt_id) <= 36 else None
            if attempt is None:
                if existing_id is not None:
                    self.repo.update_callback(existing_id, "rejected", "unknown state")
                else:
                    self._refuse_unmatched("unknown state")
                raise CallbackRejectedError("unknown state")
            outcome = self._act(attempt, params, existing_id)
            if outcome is not None:
                return outcome
        raise CallbackRejectedError("attempt keeps changing; try again", attempt_id=attempt_id)

    def _act(self, attempt: Attempt, params: dict[str, str],
             existing_id: int | None) -> CallbackOutcome | None:
        """Judge the callback and carry the verdict out; None when the attempt moved meanwhile."""
        now = self.clock()
        seen = may_be_duplicate(attempt, params, digest) and self._already_applied(attempt, params)
        verdict = judge_callback(attempt, params, now, digest, applied_before=seen)
        if verdict.status == "duplicate":
            self._record(attempt, params, existing_id, "duplicate", verdict.reason)
            return CallbackOutcome("duplicate", attempt.id, attempt.state, verdict.reason)
        if verdict.status == "pending":
            if existing_id is None:
                waiting = self.repo.callbacks(attempt.id, status="pending")
                if any(c.digest == _canonical(params) for c in waiting):
                    return CallbackOutcome("pending", attempt.id, attempt.state, verdict.reason)  # a repeat
                if len(waiting) >= MAX_PENDING:
                    # Its nonce is not known yet, so nothing tells a forged early callback from the
                    # genuine one: only a few are kept per attempt, the rest are counted, not stored.
                    self._refuse_unmatched(TOO_MANY_EARLY)
                    raise CallbackRejectedError(TOO_MANY_EARLY, attempt_id=attempt.id)
                self._record(attempt, params, None, "pending", verdict.reason or NOT_REDIRECTED_YET)
            return CallbackOutcome("pending", attempt.id, attempt.state, verdict.reason)
        if verdict.status == "rejected":
            reason = verdict.reason or "rejected"
            if existing_id is None and not state_matches(attempt, params, digest):
                # A guessed or stale state for a real attempt id: forged, so counted, not stored.
                self._refuse_unmatched(reason)
            else:
                self._reject(attempt.id, params, existing_id, reason)
            raise CallbackRejectedError(reason, attempt_id=attempt.id)
        if not self._commit(attempt, params, existing_id, verdict, now):
            return None
        if verdict.dest is State.CALLBACK_RECEIVED:
            self.wake()
        return CallbackOutcome("applied", attempt.id, verdict.dest, verdict.reason)

    def _already_applied(self, attempt: Attempt, params: dict[str, str]) -> bool:
        fingerprint = _canonical(params)
        return any(c.digest == fingerprint for c in self.repo.callbacks(attempt.id, status="applied"))

    def _record(self, attempt: Attempt, params: dict[str, str], existing_id: int | None, status: str,
                reason: str | None) -> None:
        if existing_id is not None:
            self.repo.update_callback(existing_id, status, reason)
        else:
            self.repo.record_callback(NewCallback(attempt.id, self.clock(), params, _canonical(params),
                                                  status, reason))

    def _commit(self, attempt: Attempt, params: dict[str, str], existing_id: int | None, verdict: Verdict,
                now: datetime) -> bool:
        dest = verdict.dest or State.FAILED
        received = dest is State.CALLBACK_RECEIVED
        trigger = Trigger.RECEIVE_CALLBACK if received else Trigger.FAIL
        entry = HistoryEntry.after(attempt, trigger.value, dest, now, worker=self.worker_id,
                                   outcome="ok" if received else "failed", error=verdict.error,
                                   note="callback")
        new_cb = None if existing_id is not None else NewCallback(attempt.id, now, params, _canonical(params),
                                                                  "applied", None)
        updates = ((existing_id, "applied", None),) if existing_id is not None else ()
        return self.repo.apply(transition_write(
            attempt, entry, owner=None, now=now, next_run_at=now if received else None,
            failure_reason=verdict.failure.value if verdict.failure else None, last_error=verdict.error,
            callback_secrets=params if received else None, callback=new_cb, callback_updates=updates))

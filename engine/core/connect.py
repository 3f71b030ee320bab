"""Connect links (issue 10/12 must-have 6): a short-lived, single-use link for the customer.

``Engine.connect_link(id)`` returns ``<PROVISION_PUBLIC_URL>/connect/<token>``, a link an application
can email to its customer (like Merge's Magic Link or Pipedream's Connect Link). The public receiver
(``engine.web.callback_app``) answers it with a 302 to the attempt's current consent URL.

- The token is 32 random bytes (``secrets.token_urlsafe``); only its SHA-256 is stored
  (``attempts.connect_token_hash``), so a database reader cannot open links.
- It works once: opening it clears the hash with a compare-and-set, so of two clicks one wins.
- It expires with the attempt's callback deadline, and works only while the attempt waits at its
  consent URL (REDIRECTED).
- One link per attempt: issuing a new one revokes the previous one. That is why ``provision show``
  prints a link only when asked (``--connect-link``): a plain ``show`` must not break a link
  already emailed.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import datetime

from engine.config.checks import check_url
from engine.errors import ConcurrentUpdateError, InvalidInputError, InvalidTransitionError
from persistence.repository import Repository
from persistence.writes import transition_write
from states.attempt import Attempt, HistoryEntry
from states.model import State, Trigger

CONNECT_PATH = "/connect/"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a token (SHA-256, hex): the token has 256 bits, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class ConnectLinks:
    """Issues and redeems connect links for one repository."""

    def __init__(self, repo: Repository, *, clock: Callable[[], datetime], public_url: str | None,
                 token: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> None:
        self.repo = repo
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None
        self.token = token

    def issue(self, attempt: Attempt, base_url: str | None = None, *, actor: str | None = None) -> str:
        """A new link for ``attempt`` (REDIRECTED, before its deadline); revokes the previous one.

        With ``actor`` (an operator, e.g. the console's "copy connect link"), the new link's hash is
        stored together with a ``REDIRECTED --connect_link--> REDIRECTED`` history row noting
        ``operator:<actor>``, in one version-guarded write: the history says who sent a link, when.
        The link itself is never recorded.
        """
        if base_url is not None and base_url != "":
            check_url("base_url", base_url)  # as PROVISION_PUBLIC_URL is; a non-string used to escape
        base = (base_url or "").rstrip("/") or self.public_url
        if not base:
            raise InvalidInputError("PROVISION_PUBLIC_URL",
                                    "is not set: a connect link needs the public address of "
                                    "`provision serve`",
                                    hint="Set PROVISION_PUBLIC_URL=https://connect.example.com (or "
                                         "EngineSettings(public_url=...)).")
        if attempt.state is not State.REDIRECTED or not self._open(attempt):
            raise InvalidTransitionError(
                f"attempt {attempt.id} is {attempt.state}: a connect link needs an attempt waiting for "
                "consent (REDIRECTED, before its deadline)")
        token = self.token()
        if actor is not None:
            stored = self._record(attempt, token_hash(token), actor)
        else:
            stored = self.repo.set_connect_token(attempt.id, token_hash(token), state=State.REDIRECTED.value)
        if not stored:
            raise ConcurrentUpdateError(f"attempt {attempt.id} moved on while its link was made; try again")
        return f"{base}{CONNECT_PATH}{token}"

    def _record(self, attempt: Attempt, hashed: str, actor: str) -> bool:
        now = self.clock()
        entry = HistoryEntry.after(attempt, Trigger.CONNECT_LINK.value, State.REDIRECTED, now, worker=None,
                                   note=f"operator:{actor}")
        write = transition_write(attempt, entry, owner=None, now=now, next_run_at=attempt.next_run_at,
                                 changes={"connect_token_hash": hashed},
                                 failure_reason=attempt.failure_reason, last_error=attempt.last_error)
        # Not a step: the attempt's retry counters stay as they are (transition_write resets them).
        write.values.update(runs=attempt.runs, failures=attempt.failures)
        return self.repo.apply(write)

    def redeem(self, token: str | None) -> str | None:
        """The consent URL behind ``token``, spending the link; None for an unknown, used or expired one."""
        if token is not None and not isinstance(token, str):
            raise InvalidInputError("token", "must be a connect link's token (a string)")
        if not token or not _TOKEN_RE.fullmatch(token):
            return None
        attempt_id = self.repo.take_connect_token(token_hash(token))
        attempt = self.repo.get(attempt_id) if attempt_id else None
        if attempt is None or attempt.state is not State.REDIRECTED or not self._open(attempt):
            return None
        url = attempt.secrets.get("redirect_url")
        return url if isinstance(url, str) and url else None

    def _open(self, attempt: Attempt) -> bool:
        return attempt.deadline_at is None or self.clock() < attempt.deadline_at

"""Short-lived, unguessable tokens that bind a customer's progress page to one attempt.

After a callback the receiver sends the browser to ``.../callback/progress?t=TOKEN``. The token is
the attempt id encrypted and authenticated with Fernet (AES + HMAC, with its creation time), so the
page never shows the bare attempt id, a guessed or altered token opens nothing, and a token stops
working ``ttl_s`` seconds after it was issued. Several receivers behind one load balancer must share
the key (``PROVISION_CALLBACK_PAGE_KEY``); without one, each process makes its own.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken

DEFAULT_TTL_S = 3600  # a slow provisioning with retries still finishes well within this
MAX_TOKEN_CHARS = 512


class ProgressTokens:
    """Issues and opens progress tokens; ``now`` (epoch seconds) is injectable for tests."""

    def __init__(self, key: str | bytes | None = None, *, ttl_s: int = DEFAULT_TTL_S,
                 now: Callable[[], float] = time.time) -> None:
        self._fernet = Fernet(key or Fernet.generate_key())
        self.ttl_s = ttl_s
        self._now = now

    def issue(self, attempt_id: str) -> str:
        """A token for ``attempt_id``, valid for ``ttl_s`` seconds."""
        return self._fernet.encrypt_at_time(attempt_id.encode(), int(self._now())).decode()

    def open(self, token: str | None) -> str | None:
        """The attempt id in ``token``; None when it is missing, forged, altered or expired."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            return self._fernet.decrypt_at_time(token.encode(), self.ttl_s, int(self._now())).decode()
        except (InvalidToken, ValueError, UnicodeError):
            return None

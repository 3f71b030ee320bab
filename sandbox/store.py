"""Thread-safe in-memory state of one sandbox: OAuth artefacts, realms, instances and the request log.

Handlers mutate the records directly while holding :attr:`Store.lock` (an ``RLock``), so that a compound
effect such as "check the code, consume it, create the instance" is atomic with respect to other
requests served on other threads.
"""

from __future__ import annotations

import itertools
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.defaults import (
    OAUTH1_TOKEN_LIFETIME_S,
    OAUTH2_ACCESS_TOKEN_LIFETIME_S,
    OAUTH2_REFRESH_TOKEN_HARD_LIFETIME_S,
    OAUTH2_REFRESH_TOKEN_LIFETIME_S,
)

_BASE62 = string.ascii_letters + string.digits


def random_base62(length: int) -> str:
    """A random string of ``length`` base62 characters (shape of Intuit tokens)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


@dataclass
class RequestToken:
    """An OAuth1 request token issued by ``GET /elements/{key}/oauth/token``."""

    token: str
    secret: str
    element_key: str
    api_key: str
    callback_url: str
    created_at: float
    verifier: str | None = None  # set when the user approves
    realm_id: str | None = None
    consumed: bool = False  # exchanged for an access token (verifier is single use)


@dataclass
class AuthCode:
    """An OAuth2 authorization code issued by the consent page."""

    code: str
    client_id: str
    redirect_uri: str
    element_key: str | None
    realm_id: str | None
    created_at: float
    used: bool = False


@dataclass
class AccessToken:
    """An Intuit OAuth1 access token pair (180 days life, reconnect in the last 30)."""

    token: str
    secret: str
    consumer_key: str
    granted_at: float
    instance_id: int | None = None
    valid: bool = True
    #: The app's consumer secret, which the sandbox needs to verify the OAuth 1.0a signature.
    consumer_secret: str = ""

    @property
    def expires_at(self) -> float:
        """Epoch seconds when the token stops working."""
        return self.granted_at + OAUTH1_TOKEN_LIFETIME_S


@dataclass
class RefreshToken:
    """An Intuit-style OAuth2 refresh token (rotated on every use, 100 days rolling)."""

    token: str
    client_id: str
    client_secret: str
    instance_id: int | None
    expires_at: float
    valid: bool = True
    #: Intuit's absolute cap (five years from the first consent), carried over on every rotation.
    hard_expires_at: float = float("inf")


@dataclass
class BearerToken:
    """An Intuit OAuth2 access token (one hour), remembered so the QuickBooks API can check it."""

    token: str
    refresh_token: str | None  # the refresh token it was issued with (revoking that kills it too)
    expires_at: float
    valid: bool = True


@dataclass
class Instance:
    """One element instance; ``configuration`` keeps the *unmasked* values."""

    id: int
    name: str
    token: str
    element_key: str
    flow: str  # "oauth1" | "oauth2" | "quick"
    tags: list[str]
    configuration: dict[str, str | None]
    external_authentication: str
    created_at: float
    realm_id: str | None = None
    valid: bool = True
    disabled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Store:
    """All mutable sandbox state.  ``now`` is the clock (epoch seconds), read at call time."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        # A lambda rather than ``time.time`` itself: freezegun swaps the ``time.time`` attribute, so the
        # lookup must happen at call time for frozen clocks to reach the server thread.
        self.now: Callable[[], float] = now or (lambda: time.time())
        self.lock = threading.RLock()
        self.request_tokens: dict[str, RequestToken] = {}
        self.codes: dict[str, AuthCode] = {}
        self.realms: dict[str, str] = {}  # realm id -> "sandbox" | "production"
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.bearer_tokens: dict[str, BearerToken] = {}  # OAuth2 access tokens issued
        self.instances: dict[int, Instance] = {}
        self._log: list[dict[str, Any]] = []
        #: Every refresh token presented at the token endpoint, by anyone, in order: (token, who, when).
        self.refresh_presentations: list[tuple[str, str, float]] = []
        self.oauth1_nonces: set[tuple[str, str, str]] = set()  # (consumer key, timestamp, nonce) seen
        self._instance_ids = itertools.count(1001)
        self._realm_ids = itertools.count(1)

    # -- identifiers -------------------------------------------------------------------------------
    def next_instance_id(self) -> int:
        """A fresh, increasing instance id."""
        with self.lock:
            return next(self._instance_ids)

    def new_realm(self, company: str) -> str:
        """Create a QuickBooks company (realm) of kind ``company`` and return its numeric id."""
        with self.lock:
            realm_id = str(9130350000000000 + next(self._realm_ids) * 7919)
            self.realms[realm_id] = company
            return realm_id

    # -- provider tokens ---------------------------------------------------------------------------
    def issue_access_token(self, consumer_key: str, consumer_secret: str, instance_id: int | None,
                           granted_at: float | None = None) -> AccessToken:
        """Issue and remember a new OAuth1 access token pair."""
        with self.lock:
            token = AccessToken("qyprd" + random_base62(40), random_base62(40), consumer_key,
                                self.now() if granted_at is None else granted_at, instance_id,
                                consumer_secret=consumer_secret)
            self.access_tokens[token.token] = token
            return token

    def issue_refresh_token(self, client_id: str, client_secret: str, instance_id: int | None,
                            token: str | None = None, hard_expires_at: float | None = None) -> RefreshToken:
        """Issue (or register a caller-supplied) OAuth2 refresh token valid for 100 days from now.

        ``hard_expires_at`` continues a rotation chain; a new chain gets Intuit's five-year cap.
        """
        with self.lock:
            now = self.now()
            hard = now + OAUTH2_REFRESH_TOKEN_HARD_LIFETIME_S if hard_expires_at is None else hard_expires_at
            record = RefreshToken(token or "AB" + random_base62(48), client_id, client_secret, instance_id,
                                  min(now + OAUTH2_REFRESH_TOKEN_LIFETIME_S, hard), hard_expires_at=hard)
            self.refresh_tokens[record.token] = record
            return record

    def issue_bearer_token(self, refresh_token: str | None) -> BearerToken:
        """Issue and remember a new OAuth2 access token (one hour), issued with ``refresh_token``."""
        with self.lock:
            record = BearerToken("eyJ" + random_base62(60), refresh_token,
                                 self.now() + OAUTH2_ACCESS_TOKEN_LIFETIME_S)
            self.bearer_tokens[record.token] = record
            return record

    def invalidate_token(self, token: str) -> int:
        """Revoke ``token`` (an OAuth2 access or refresh token, or an OAuth1 access token) and the
        access tokens issued with it, as the user disconnecting the app at Intuit does; how many died."""
        with self.lock:
            dead = [r for r in (self.bearer_tokens.get(token), self.refresh_tokens.get(token),
                                self.access_tokens.get(token)) if r is not None and r.valid]
            dead += [b for b in self.bearer_tokens.values() if b.refresh_token == token and b.valid]
            for record in dead:
                record.valid = False
            return len(dead)

    def invalidate_instance_tokens(self, instance_id: int) -> None:
        """Revoke every provider token owned by an instance (used on re-authentication)."""
        with self.lock:
            for access in self.access_tokens.values():
                if access.instance_id == instance_id:
                    access.valid = False
            for refresh in self.refresh_tokens.values():
                if refresh.instance_id == instance_id:
                    refresh.valid = False

    def valid_refresh_tokens(self, instance_id: int) -> list[str]:
        """Refresh tokens currently usable for ``instance_id`` (what the instance *should* hold)."""
        with self.lock:
            now = self.now()
            return [t.token for t in self.refresh_tokens.values()
                    if t.instance_id == instance_id and t.valid and t.expires_at > now]

    # -- request log -------------------------------------------------------------------------------
    def log_request(self, entry: dict[str, Any]) -> None:
        """Append one served request to the log."""
        with self.lock:
            self._log.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log, oldest first."""
        with self.lock:
            return [dict(entry) for entry in self._log]

    def clear_requests(self) -> None:
        """Forget every logged request."""
        with self.lock:
            self._log.clear()

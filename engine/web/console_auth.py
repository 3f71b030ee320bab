"""Who may use the operator console, and proof that a form was sent by the console itself.

- Login: a shared token (``PROVISION_CONSOLE_TOKEN``; the operator also types a name, which the
  history records as ``operator:<name>``) or a password (``PROVISION_CONSOLE_PASSWORD_HASH``, for
  the one ``PROVISION_CONSOLE_USER``). Both compare in constant time.
- Session: a cookie ``name|csrf|expiry`` signed with HMAC-SHA256 (HttpOnly, SameSite=Strict,
  Secure off loopback). The key comes from ``PROVISION_CONSOLE_SESSION_KEY`` or is made per process.
- CSRF: every action is a POST carrying the session's CSRF token; a POST whose ``Origin`` is not
  this console is refused as well.
- Without a login (allowed on loopback only), everyone who reaches the port is ``local``; the
  console still sets a session for CSRF, and answers only requests whose ``Host`` is a loopback
  name (a DNS-rebinding page cannot drive it from a browser).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.security import check_password_hash
from werkzeug.wrappers import Request, Response

from engine.config import ConsoleSettings

COOKIE = "provision_console"
LOCAL_OPERATOR = "local"
#: An operator name as recorded in the history (``operator:<name>``): short and plain.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,39}$")
_LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``, optionally ``[v6]``) only accepts local connections."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Operator:
    """A signed-in operator: the ``name`` the history records and the session's ``csrf`` token."""

    name: str
    csrf: str
    expires: int

    @property
    def actor(self) -> str:
        """The ``actor`` passed to ``Engine`` actions (recorded as ``operator:<actor>``)."""
        return self.name


class ConsoleAuth:
    """Login checks, session cookies and CSRF tokens for one console listener."""

    def __init__(self, settings: ConsoleSettings, *, secure_cookies: bool,
                 now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.secure_cookies = secure_cookies
        self._key = (settings.session_key or "").encode() or secrets.token_bytes(32)
        self._now = now

    @property
    def login_required(self) -> bool:
        """Whether operators must sign in (False only for an unauthenticated loopback console)."""
        return self.settings.auth_configured

    # --- login ---------------------------------------------------------------------------------

    def check_login(self, name: str, secret: str) -> Operator | None:
        """The operator for these credentials, or None (the caller says only "not accepted")."""
        s = self.settings
        if not NAME_RE.match(name or "") or not secret or len(secret) > 1024:
            return None
        ok = False
        if s.token is not None and hmac.compare_digest(secret.encode(), s.token.encode()):
            ok = True
        if not ok and s.password_hash is not None and hmac.compare_digest(name, s.user):
            ok = check_password_hash(s.password_hash, secret)
        return self.new_session(name) if ok else None

    def bearer_ok(self, request: Request) -> bool:
        """Whether ``Authorization: Bearer <token>`` carries the console token (a scraper's login)."""
        token = self.settings.token
        header = request.headers.get("Authorization", "")
        if token is None or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())

    def new_session(self, name: str) -> Operator:
        """A fresh session (new CSRF token) for ``name``."""
        return Operator(name, secrets.token_urlsafe(24), int(self._now()) + self.settings.session_s)

    # --- the cookie ------------------------------------------------------------------------------

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def session(self, request: Request) -> Operator | None:
        """The operator of a valid, unexpired session cookie, else None."""
        raw = request.cookies.get(COOKIE, "")
        payload, _, mac = raw.rpartition(".")
        if not payload or len(raw) > 512 or not hmac.compare_digest(self._sign(payload), mac):
            return None
        try:
            name, csrf, expires = base64.urlsafe_b64decode(payload.encode()).decode().split("|")
            operator = Operator(name, csrf, int(expires))
        except ValueError:
            return None
        if operator.expires <= self._now() or not NAME_RE.match(operator.name):
            return None
        return operator

    def set_cookie(self, response: Response, operator: Operator) -> None:
        """Store ``operator``'s session in the browser."""
        payload = base64.urlsafe_b64encode(
            f"{operator.name}|{operator.csrf}|{operator.expires}".encode()).decode()
        response.set_cookie(COOKIE, f"{payload}.{self._sign(payload)}", max_age=self.settings.session_s,
                            httponly=True, samesite="Strict", secure=self.secure_cookies, path="/")

    def clear_cookie(self, response: Response) -> None:
        """End the session in the browser."""
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=self.secure_cookies)

    # --- request checks -------------------------------------------------------------------------

    def csrf_ok(self, request: Request, operator: Operator) -> bool:
        """A POST is the console's own: its form token matches the session and its Origin is ours."""
        sent = request.form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent.encode(), operator.csrf.encode()):
            return False
        origin = request.headers.get("Origin")
        return origin is None or origin == request.host_url.rstrip("/")

    def host_ok(self, request: Request) -> bool:
        """Without a login, only loopback ``Host`` names are answered (DNS rebinding defence)."""
        if self.login_required:
            return True
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        return is_loopback(host)

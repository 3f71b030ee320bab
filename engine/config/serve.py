"""``provision serve`` and ``provision console``: the listener's bounds (``ServeSettings``), the
console's login (``ConsoleSettings``), and what customers see (``Branding``, the progress-link key)."""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from engine.config.bounds import numbers_from_env
from engine.config.checks import PRINTABLE_RE, check_url
from engine.config.environment import environment
from engine.errors import InvalidInputError


@dataclass(frozen=True)
class ConsoleSettings:
    """How the operator console authenticates (``provision console``).

    ``token``: a shared bearer secret typed at the login form (the operator also types a name, which
    the history records). ``password_hash``: werkzeug's ``generate_password_hash`` format, for the
    single ``user``. ``session_key``: signs session cookies; a random one per process when unset
    (sessions then end when the console restarts).
    """

    token: str | None = None
    password_hash: str | None = None
    user: str = "operator"
    session_key: str | None = None
    session_s: int = 12 * 3600

    @property
    def auth_configured(self) -> bool:
        """Whether a login is required (a token or a password hash is set)."""
        return bool(self.token or self.password_hash)

    def __repr__(self) -> str:  # never show the token, hash or key
        return f"ConsoleSettings(auth_configured={self.auth_configured}, user={self.user!r})"


@dataclass(frozen=True)
class ServeSettings:
    """How ``provision serve`` bounds its work (waitress's thread pool, connections, idle time).

    ``threads`` answer requests; at most ``connection_limit`` connections are open (more wait in
    the listen backlog); a connection idle for ``idle_timeout_s`` is closed (slow and half-open
    clients). Each client address may send ``refused_burst`` refused callbacks at once, then
    ``refused_per_minute``; beyond that it gets 429 until its bucket refills. ``reuse_port``
    (``SO_REUSEPORT``) lets several ``provision serve`` processes listen on one port.
    """

    threads: int = 8
    connection_limit: int = 1000
    idle_timeout_s: float = 30.0
    refused_burst: int = 20
    refused_per_minute: int = 60
    reuse_port: bool = False


_SERVE_ENV = {
    "threads": "PROVISION_SERVE_THREADS",
    "connection_limit": "PROVISION_SERVE_CONNECTION_LIMIT",
    "idle_timeout_s": "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS",
    "refused_burst": "PROVISION_SERVE_REFUSED_BURST",
    "refused_per_minute": "PROVISION_SERVE_REFUSED_PER_MINUTE",
}


def serve_settings_from_env(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """``ServeSettings`` from ``PROVISION_SERVE_*`` variables (ranges: ``BOUNDS``)."""
    env = environment(environ)
    raw = env.get("PROVISION_SERVE_REUSEPORT", "").strip().lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise InvalidInputError("PROVISION_SERVE_REUSEPORT", f"must be true or false, got {raw[:40]!r}")
    return ServeSettings(**numbers_from_env(environ, _SERVE_ENV), reuse_port=raw in ("true", "1"))


_HASH_RE = re.compile(r"^(scrypt|pbkdf2):[^$]+\$[^$]+\$[0-9a-f]+$")
_COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")
_EMAIL_RE = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+$")


def console_settings_from_env(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    """``ConsoleSettings`` from ``PROVISION_CONSOLE_{TOKEN,PASSWORD_HASH,USER,SESSION_KEY}``."""
    env = environment(environ)
    token = env.get("PROVISION_CONSOLE_TOKEN") or None
    if token is not None and len(token) < 16:
        raise InvalidInputError("PROVISION_CONSOLE_TOKEN", "must be at least 16 characters",
                                hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    password_hash = env.get("PROVISION_CONSOLE_PASSWORD_HASH") or None
    if password_hash is not None and not _HASH_RE.match(password_hash):
        raise InvalidInputError(
            "PROVISION_CONSOLE_PASSWORD_HASH", "must be a werkzeug password hash (scrypt:... or pbkdf2:...)",
            hint="python3 -c 'from werkzeug.security import generate_password_hash as g; print(g(\"...\"))'")
    user = env.get("PROVISION_CONSOLE_USER") or "operator"
    if not PRINTABLE_RE.fullmatch(user) or len(user) > 64:
        raise InvalidInputError("PROVISION_CONSOLE_USER", "must be 1-64 printable characters")
    return ConsoleSettings(token=token, password_hash=password_hash, user=user,
                           session_key=env.get("PROVISION_CONSOLE_SESSION_KEY") or None)


@dataclass(frozen=True)
class Branding:
    """What customers see on the callback pages: the app's name, logo, colours and support contact."""

    name: str = "our app"
    logo_url: str | None = None
    colour: str = "#1d4ed8"  # buttons, links, the header rule
    background: str = "#f8fafc"
    support: str | None = None  # an e-mail address or an http(s) URL

    @property
    def support_href(self) -> str | None:
        """The support contact as a link target (``mailto:`` for an address)."""
        if not self.support:
            return None
        return self.support if "://" in self.support else f"mailto:{self.support}"


def branding_from_env(environ: Mapping[str, str] | None = None) -> Branding:
    """``Branding`` from ``PROVISION_BRAND_{NAME,LOGO_URL,COLOUR,BACKGROUND,SUPPORT}``, checked."""
    env = environment(environ)
    values: dict[str, str] = {}
    name = env.get("PROVISION_BRAND_NAME")
    if name:
        if not PRINTABLE_RE.fullmatch(name) or len(name) > 80:
            raise InvalidInputError("PROVISION_BRAND_NAME", "must be 1-80 printable characters")
        values["name"] = name
    logo = env.get("PROVISION_BRAND_LOGO_URL")
    if logo:
        values["logo_url"] = check_url("PROVISION_BRAND_LOGO_URL", logo)
    for field_name, var in (("colour", "PROVISION_BRAND_COLOUR"),
                            ("background", "PROVISION_BRAND_BACKGROUND")):
        raw = env.get(var)
        if raw:
            if not _COLOUR_RE.match(raw):  # it lands in CSS: nothing but a hex colour may pass
                raise InvalidInputError(var, f"must be a hex colour like #1d4ed8, got {raw[:20]!r}")
            values[field_name] = raw
    support = env.get("PROVISION_BRAND_SUPPORT")
    if support:
        if "://" in support:
            check_url("PROVISION_BRAND_SUPPORT", support)
        elif not _EMAIL_RE.match(support) or len(support) > 200:
            raise InvalidInputError("PROVISION_BRAND_SUPPORT", "must be an e-mail address or an http(s) URL")
        values["support"] = support
    return Branding(**values)


def callback_page_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``PROVISION_CALLBACK_PAGE_KEY``: the Fernet key of the customers' progress links, or None."""
    env = environment(environ)
    key = env.get("PROVISION_CALLBACK_PAGE_KEY") or None
    if key is not None:
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (ValueError, binascii.Error):
            valid = False
        if not valid:
            raise InvalidInputError("PROVISION_CALLBACK_PAGE_KEY",
                                    "must be a Fernet key (32 url-safe base64 bytes)",
                                    hint="python3 -c 'from cryptography.fernet import Fernet; "
                                    "print(Fernet.generate_key().decode())'")
    return key

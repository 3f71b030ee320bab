"""A logging filter that masks secrets in log records (issue 5/6 item 2).

Why it exists: with DEBUG logging, urllib3 prints every request line, and GET /oauth/token and
GET /oauth/url carry ``apiSecret`` (and ``requestToken``, ``state``) in their query strings, which
the platform's API forces on us. Werkzeug's error log lines quote the raw request line of the
callback receiver, which carries the OAuth verifier or code. Neither library can be told to leave
the values out, so records from those loggers (and from ours, as a second line of defence) go
through :class:`RedactingFilter`, which rewrites the formatted message with the values masked.

Filters attached to a logger only see records created on that very logger (not on its children),
so :func:`install` attaches the filter to each logger name in :data:`LOGGER_NAMES`, and to the
handlers of the root logger, which every propagated record passes through.
"""
from __future__ import annotations

import logging
import re
import threading

MASK = "********"

# Query or form parameters whose values are secret (names compared case-insensitively, anywhere in
# the name: apiSecret, client_secret, requestToken, oauth_verifier, code, refresh_token, state...).
_PARAM_RE = re.compile(
    r"(?i)((?:^|[?&;\s\"'(])[\w.\[\]%-]*?(?:secret|token|verifier|code|password|state|signature)"
    r"[\w.\[\]%-]*=)([^&;\s\"'#)]+)"
)
# "key": "value" / 'key': 'value' pairs of JSON or reprs whose key names a secret.
_PAIR_RE = re.compile(
    r"(?i)([\"'][\w.-]*(?:secret|token|verifier|password|code|state)[\w.-]*[\"']\s*:\s*[\"'])([^\"']+)"
)
# The platform's Authorization header ("User <secret>, Organization <secret>[, Element <token>]").
_AUTH_RE = re.compile(r"\b(User|Organization|Element)\s+(?!\*{8})([^\s,\"']{6,})(?=\s*,|\s*$|[\"'])")
_HEADER_RE = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)([^\"'\n]+)")

# Loggers whose records may quote URLs, request lines or headers (exact names: see module doc).
LOGGER_NAMES: tuple[str, ...] = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "werkzeug",
    "engine",
    "engine.web.callback_app",
    "engine.core.callbacks",
    "engine.core.runner",
    "engine.core.facade",
    "engine.clients.elements",
    "engine.clients.provider",
    "engine.core.retry",
    "engine.web.console",
    "engine.web.health",
    "engine.security.rotation",
    "engine.security.crypto",
    "provision",
    "states",
    "persistence",
)

_lock = threading.Lock()
_installed: set[int] = set()


def redact_text(text: str) -> str:
    """``text`` with secret query parameters, secret JSON values and Authorization values masked."""
    if not text:
        return text
    text = _HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _PARAM_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _PAIR_RE.sub(lambda m: m.group(1) + MASK, text)
    return _AUTH_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with secrets masked; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging.Filter's contract
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not hide the record
            message = str(record.msg)
        cleaned = redact_text(message)
        if cleaned != message or record.args:
            # Freeze the formatted text: handlers would otherwise format msg % args again.
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install(extra_handlers: list[logging.Handler] | None = None) -> RedactingFilter:
    """Attach the filter to the loggers in ``LOGGER_NAMES`` and to the root logger's handlers.

    Idempotent and thread-safe; call it again after adding handlers (the CLI does, after
    ``basicConfig``) so the new ones are covered too.
    """
    with _lock:
        targets: list[logging.Filterer] = [logging.getLogger(n) for n in LOGGER_NAMES]
        targets.extend(logging.getLogger().handlers)
        targets.extend(extra_handlers or ())
        for target in targets:
            if id(target) not in _installed or _FILTER not in target.filters:
                target.addFilter(_FILTER)
                _installed.add(id(target))
    return _FILTER


def configure_logging(verbose: int) -> None:
    """The CLI's logging: stderr, WARNING (``-v`` INFO, ``-vv`` DEBUG), every record redacted."""
    import sys  # noqa: PLC0415 - only the CLI needs it

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    layout = "%(levelname)s %(name)s: %(message)s"
    if verbose > 0:
        layout = "%(asctime)s " + layout
    logging.basicConfig(level=level, stream=sys.stderr, format=layout)
    # urllib3's DEBUG lines (-vv) carry request URLs, and GET /oauth/token has apiSecret in its
    # query: they are shown, because the filter installed below masks every secret value in them.
    logging.getLogger("urllib3").setLevel(level)
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING if verbose < 2 else logging.INFO))
    install()

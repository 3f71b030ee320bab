"""A logging filter that masks secrets in log records (issue 5/6 item 2), installed at the edges.

Why it exists: with DEBUG logging, urllib3 prints every request line, and GET /oauth/token and
GET /oauth/url carry ``apiSecret`` (and ``requestToken``, ``state``) in their query strings, which
the platform's API forces on us. Werkzeug's error log lines quote the raw request line of the
callback receiver, which carries the OAuth verifier or code. Neither library can be told to leave
the values out, so records from those loggers (and from ours, as a second line of defence) go
through :class:`RedactingFilter`, which rewrites the formatted message with the values masked.

Who installs it: the edges only (the CLI, ``serve`` and ``open_engine``), never a constructor, so an
embedder's logging is left as the embedder set it up, apart from this filter. Filters attached to
a logger only see records created on that very logger (not on its children), so :func:`install`
attaches the filter to every logger of the trees in :data:`LOGGER_TREES` that exists by then, and to
the handlers of the root logger, which every propagated record passes through.
"""
from __future__ import annotations

import logging
import re
import threading

from engine.security.masking import MASK, SECRET_KEY_HINTS

# Names that make a query parameter or JSON key secret in free text: the key hints, plus the OAuth
# ``state`` nonce, which only ever appears inside URLs and payloads (a ``state`` column of our own
# is not secret, so it is not a secret key elsewhere).
_TEXT_HINTS = "|".join((*SECRET_KEY_HINTS, "state"))
# Query or form parameters whose values are secret (names compared case-insensitively, anywhere in
# the name: apiSecret, client_secret, requestToken, oauth_verifier, code, refresh_token, state...).
_PARAM_RE = re.compile(
    rf"(?i)((?:^|[?&;\s\"'(])[\w.\[\]%-]*?(?:{_TEXT_HINTS})"
    r"[\w.\[\]%-]*=)([^&;\s\"'#)]+)"
)
# "key": "value" / 'key': 'value' pairs of JSON or reprs whose key names a secret.
_PAIR_RE = re.compile(
    rf"(?i)([\"'][\w.-]*(?:{_TEXT_HINTS})[\w.-]*[\"']\s*:\s*[\"'])([^\"']+)"
)
# The platform's Authorization header ("User <secret>, Organization <secret>[, Element <token>]").
_AUTH_RE = re.compile(r"\b(User|Organization|Element)\s+(?!\*{8})([^\s,\"']{6,})(?=\s*,|\s*$|[\"'])")
_HEADER_RE = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)([^\"'\n]+)")

#: Logger trees whose records may quote URLs, request lines, headers or payloads: ours, and the
#: HTTP libraries we drive (every existing logger in each tree gets the filter, see module doc).
LOGGER_TREES: tuple[str, ...] = (
    "engine", "provision", "states", "persistence", "urllib3", "requests", "werkzeug",
)
#: Loggers named up front, so they carry the filter even when their module is imported later.
LOGGER_NAMES: tuple[str, ...] = (
    *LOGGER_TREES,
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "engine.web.console",
    "engine.web.health",
)

_lock = threading.Lock()


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


def _in_trees(name: str) -> bool:
    return any(name == tree or name.startswith(tree + ".") for tree in LOGGER_TREES)


def install(extra_handlers: list[logging.Handler] | None = None) -> RedactingFilter:
    """Attach the filter to every logger of ``LOGGER_TREES`` and to the root logger's handlers.

    Idempotent and thread-safe (a filter is attached once per logger or handler); call it again
    after adding handlers or importing modules with loggers of their own so those are covered too.
    """
    with _lock:
        names = {*LOGGER_NAMES, *(n for n in list(logging.Logger.manager.loggerDict) if _in_trees(n))}
        targets: list[logging.Filterer] = [logging.getLogger(n) for n in sorted(names)]
        targets.extend(logging.getLogger().handlers)
        targets.extend(extra_handlers or ())
        for target in targets:
            target.addFilter(_FILTER)  # a no-op when it is attached already
    return _FILTER

"""Checks shared by the settings modules: printable text and absolute http(s) URLs."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from engine.errors import InvalidInputError

#: Bidirectional overrides, embeddings, isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E/F,
#: U+061C): they make a name or id display as something else ("Trojan Source"), issue 16 finding 10.
BIDI_CHARS = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: Text a person typed: no control, line-separator, bidi-control or surrogate characters.
PRINTABLE_RE = re.compile(rf"[^\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI_CHARS}\ud800-\udfff]+")
MAX_URL = 2048


def check_url(field: str, value: str) -> str:
    """An absolute http(s) URL with a host (and a valid port, if any), at most ``MAX_URL`` characters."""
    problem = f"must be an absolute http or https URL, got {str(value)[:100]!r}"
    if not isinstance(value, str) or len(value) > MAX_URL or not PRINTABLE_RE.fullmatch(value):
        raise InvalidInputError(field, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise InvalidInputError(field, problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise InvalidInputError(field, problem)
    return value

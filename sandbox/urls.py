"""URL helpers."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def add_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` merged into its query (existing keys replaced, others kept in order)."""
    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(params)
    return urlunsplit(parts._replace(query=urlencode(merged)))

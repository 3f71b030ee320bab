"""Checking an element key against the platform's catalog before an attempt is stored (issue 18 item 5).

``GET /elements/{key}`` answers 404 for a key the platform does not know: ``start`` refuses it
(``UnknownElementError``, nothing stored). Its ``configuration`` entries name the keys the element
takes; a configuration key outside them is not refused (the platform's list may lag behind what a
provider accepts) but reported, so a typo such as ``use_sandbx`` does not go unnoticed.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import ApiError, ElementCheckUnavailableError, NotFoundApiError, UnknownElementError

#: Keys the engine itself sets or reads for every OAuth element, known whatever the catalog lists.
ENGINE_KEYS = frozenset({"authentication.type", "oauth.api.key", "oauth.api.secret", "oauth.callback.url",
                         "oauth.scope", "oauth.user.refresh_interval", "oauth.user.refresh_time",
                         "oauth.user.refresh_token", "oauth.user.token", "oauth.user.token.secret"})


class ElementCatalog(Protocol):
    """The platform call this check needs (``ElementsClient.get_element``)."""

    def get_element(self, element: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ElementCheck:
    """What the platform says about an element: its known configuration keys, and ours it lacks."""

    element: str
    known_keys: tuple[str, ...]
    unknown_keys: tuple[str, ...]

    def warning(self) -> str | None:
        """The warning for unknown configuration keys (None when there are none)."""
        if not self.unknown_keys:
            return None
        known = ", ".join(self.known_keys) or "(none)"
        return (f"configuration key{'s' if len(self.unknown_keys) > 1 else ''} "
                f"{', '.join(self.unknown_keys)} {'are' if len(self.unknown_keys) > 1 else 'is'} not "
                f"known for element {self.element!r}; its known keys: {known}")


def check_element(catalog: ElementCatalog, element: str, config_keys: Iterable[str]) -> ElementCheck:
    """Ask the platform about ``element``; raise when it does not exist or cannot be asked."""
    try:
        data = catalog.get_element(element)
    except NotFoundApiError:
        raise UnknownElementError(element) from None
    except ApiError as exc:  # down, timing out, rejecting our credentials: not the caller's input
        raise ElementCheckUnavailableError(element, exc.message) from None
    entries = data.get("configuration")
    known = sorted({str(e["key"]) for e in entries if isinstance(e, dict) and e.get("key")}) \
        if isinstance(entries, list) else []
    # No list at all: nothing to compare with, so no warning (rather than a false one).
    unknown = sorted(k for k in set(config_keys) if known and k not in known and k not in ENGINE_KEYS)
    return ElementCheck(element, tuple(known), tuple(unknown))

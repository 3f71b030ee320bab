"""Attempt ids by unique prefix: what operators type (``provision show 1f0c2a9b``)."""
from __future__ import annotations

from engine.core.intake import attempt_id_to_look_up
from engine.errors import AttemptNotFoundError, InvalidInputError
from persistence.repository import Repository

MIN_PREFIX = 4
FULL_ID = 36
_SHOWN = 5  # candidates listed when a prefix is ambiguous


def resolve_attempt_id(repo: Repository, text: str) -> str:
    """The full id of the one attempt whose id starts with ``text`` (a full id is returned as is).

    ``InvalidInputError`` for a prefix shorter than ``MIN_PREFIX`` or one that several attempts
    share (naming a few of them); ``AttemptNotFoundError`` when none matches.
    """
    key = attempt_id_to_look_up(text)
    if key is None:
        raise AttemptNotFoundError(str(text)[:60])
    if len(key) >= FULL_ID:
        return key
    if len(key) < MIN_PREFIX:
        raise InvalidInputError("id", f"a prefix needs at least {MIN_PREFIX} characters, got {key!r}",
                                hint="Give more characters of the id (Engine.list shows whole ids).")
    found = repo.ids_with_prefix(key, _SHOWN + 1)
    if not found:
        raise AttemptNotFoundError(key)
    if len(found) > 1:
        listed = ", ".join(found[:_SHOWN]) + (", ..." if len(found) > _SHOWN else "")
        raise InvalidInputError("id", f"{key!r} is the prefix of several attempts: {listed}",
                                hint="Give more characters of the id.")
    return found[0]

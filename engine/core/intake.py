"""Validation of everything a caller gives ``Engine.start`` (issue 5/6 item 4).

Each check raises ``InvalidInputError`` naming the field, the rule and the fix, before anything is
persisted or sent. The CLI maps these to exit code 2.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine.config import BIDI_CHARS, PRINTABLE_RE, check_url
from engine.errors import InvalidInputError, MissingConfigurationError
from states.elements import AUTH_TYPES, auth_type, spec_for
from states.model import DEFAULT_RENEWAL_OWNER, Flow, RenewalOwner, State

_REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_ELEMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9 _.:@/+=-]{1,100}$")
_CONFIG_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# No C0/C1 controls, no line/paragraph separators, no bidi controls, no lone surrogates (they cannot be
# stored as UTF-8). Configuration values may be multi-line (PEM keys) but carry no other control characters.
_VALUE_RE = re.compile(rf"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029{BIDI_CHARS}\ud800-\udfff]*")
MAX_TAGS = 20
MAX_CONFIG_VALUE = 4096
MAX_CALLBACK_WAIT_S = 30 * 24 * 3600
#: ``list`` filters: ages up to 100 years (a datetime cannot go much further back) and page sizes
#: up to 100,000 rows; larger values used to escape as OverflowError (issue 16 finding 10).
MAX_AGE = timedelta(days=100 * 365)
MAX_LIST_LIMIT = 100_000
MAX_ATTEMPT_ID = 36  # a UUID
MAX_CUSTOMER = 200


def validate_customer(customer: Any, field: str = "customer") -> str | None:
    """The caller's customer id: 1 to 200 printable characters (no controls, no bidi), or None."""
    if customer is None:
        return None
    if (not isinstance(customer, str) or not customer.strip() or len(customer) > MAX_CUSTOMER
            or not PRINTABLE_RE.fullmatch(customer)):
        raise InvalidInputError(field, f"must be 1 to {MAX_CUSTOMER} printable characters (the application's "
                                f"own id for the account, e.g. acme-42), got {shown(customer)}")
    return customer.strip()


@dataclass(frozen=True)
class StartRequest:
    """A validated request to start an attempt."""

    element_key: str
    flow: Flow
    name: str
    tags: tuple[str, ...]
    config: dict[str, Any]
    idempotency_key: str | None
    callback_wait_s: int | None
    customer: str | None = None
    replace: bool = False
    replaces: str | None = None  # the live attempt it replaces (engine.core.guard fills it)
    renewal_owner: RenewalOwner = RenewalOwner.ENGINE


def shown(value: Any, limit: int = 40) -> str:
    """A short, quoted, escaped form of a bad value for an error message (never raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        # str() of a huge int is slow and fails beyond 4,300 digits.
        return f"an integer of {value.bit_length()} bits"
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a caller's object whose __str__ fails is still a bad value
        text = f"<{type(value).__name__}>"
    return repr(text[:limit])


def check_flag(field: str, value: Any) -> bool:
    """``value`` when it is True or False, else ``InvalidInputError`` naming ``field``: a truthy
    string such as "no" must not count as True."""
    if not isinstance(value, bool):
        raise InvalidInputError(field, f"must be True or False, got {shown(value)}")
    return value


def check_whole_number(field: str, value: Any, low: int, high: int, what: str) -> int:
    """``value`` when it is an int (not a bool) from ``low`` to ``high``, else ``InvalidInputError``
    naming ``field`` ("must be {what} from {low} to {high}"): nothing else may reach the SQL."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(field, f"must be {what} from {low} to {high}, got {shown(value)}")
    return value


def attempt_id_to_look_up(attempt_id: Any) -> str | None:
    """The id to look up, or None for a string that cannot be any attempt's id.

    A non-string is ``InvalidInputError``; an unknown id is the caller's ``AttemptNotFoundError``.
    Over-long or non-printable strings are never sent to the database (PostgreSQL refuses NUL).
    """
    if not isinstance(attempt_id, str):
        raise InvalidInputError("attempt_id", "must be a string (an attempt id), "
                                f"got {type(attempt_id).__name__}")
    return attempt_id if len(attempt_id) <= MAX_ATTEMPT_ID and PRINTABLE_RE.fullmatch(attempt_id) else None


def _age(field: str, value: Any) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or not timedelta(0) <= value <= MAX_AGE:
        raise InvalidInputError(field, f"must be a timedelta from 0 to {MAX_AGE.days} days (100 years), "
                                f"got {shown(value)}")
    return value


@dataclass(frozen=True)
class ListFilters:
    """Validated ``Engine.list`` arguments."""

    state: State | None
    element: str | None
    older_than: timedelta | None
    newer_than: timedelta | None
    limit: int | None
    customer: str | None = None


def validate_list(state: Any, element: Any, older_than: Any, newer_than: Any, limit: Any,
                  customer: Any = None) -> ListFilters:
    """Check ``Engine.list``'s filters; ``InvalidInputError`` names the argument, the rule and the value."""
    st = None
    if state is not None:
        try:
            st = State(state.upper() if isinstance(state, str) else state)
        except (ValueError, TypeError):
            raise InvalidInputError(
                "state", f"must be one of {', '.join(s.value for s in State)}, got {shown(state)}"
            ) from None
    if element is not None and (not isinstance(element, str) or not _ELEMENT_RE.fullmatch(element)):
        raise InvalidInputError("element", "must be an element key: lowercase letters, digits, '_', '.', '-' "
                                f"(at most 64), got {shown(element)}")
    if limit is not None:
        check_whole_number("limit", limit, 1, MAX_LIST_LIMIT, "a whole number")
    return ListFilters(st, element, _age("older_than", older_than), _age("newer_than", newer_than), limit,
                       validate_customer(customer))


def validate_reason(reason: Any) -> str | None:
    """A failure reason filter (``invalid_database``): snake case, at most 64 characters."""
    if reason is not None and (not isinstance(reason, str) or not _REASON_RE.fullmatch(reason)):
        raise InvalidInputError("reason", "must be a failure reason such as invalid_database or "
                                f"cancelled (lowercase letters and '_'), got {shown(reason)}")
    return reason


def _int_field(field: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInputError(field, f"must be a whole number, got {shown(value)}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidInputError(field, f"must be {bound}, got {number}")
    return number


def parse_config_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (the CLI's ``--config``) to a dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        # Only the key is echoed: the value may be a secret (--config oauth.api.secret=...).
        if not sep or not key:
            raise InvalidInputError("--config", f"expected KEY=VALUE, got {key[:60]!r} without '='" if not sep
                                    else "expected KEY=VALUE, got an empty KEY",
                                    hint="Write it as --config oauth.api.key=VALUE")
        if not _CONFIG_KEY_RE.fullmatch(key):
            raise InvalidInputError("--config", f"key {key[:60]!r} must be letters, digits and ._- "
                                    "(e.g. oauth.api.key)")
        if key in out:
            raise InvalidInputError("--config", f"key {key!r} given twice")
        out[key] = value
    return out


def validate_start(
    *,
    element: str,
    name: str,
    flow: str | Flow | None,
    api_key: str | None,
    api_secret: str | None,
    callback_url: str | None,
    tags: Iterable[str],
    config: Mapping[str, Any] | None,
    idempotency_key: str | None,
    callback_wait_s: int | str | None,
    customer: str | None = None,
    replace: bool = False,
    renewal: str | RenewalOwner | None = None,
) -> StartRequest:
    """Check every start input; return the normalised request or raise ``InvalidInputError``."""
    if not isinstance(element, str) or not _ELEMENT_RE.fullmatch(element):
        raise InvalidInputError("element", "must be an element key: lowercase letters, digits, '_', '.', '-' "
                                f"(at most 64), e.g. quickbooks; got {shown(element, 70)}")
    spec = spec_for(element)
    if flow is None or flow == "":
        chosen = spec.default_flow
    else:
        try:
            chosen = Flow(flow)
        except (ValueError, TypeError):
            raise InvalidInputError(
                "flow", f"must be one of oauth1, oauth2, quick; got {shown(flow, 30)}"
            ) from None
    if chosen not in spec.flows:
        raise InvalidInputError(
            "flow",
            f"element {element!r} supports {', '.join(f.value for f in spec.flows)}, not {chosen.value}",
        )
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not PRINTABLE_RE.fullmatch(name):
        raise InvalidInputError("name", "must be 1 to 200 printable characters")
    if tags is None:
        tags = ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise InvalidInputError("tag", "tags must be a list of strings (a single string is not a list)")
    tag_list = list(tags)
    if len(tag_list) > MAX_TAGS:
        raise InvalidInputError("tag", f"at most {MAX_TAGS} tags, got {len(tag_list)}")
    for tag in tag_list:
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
            raise InvalidInputError(
                "tag",
                f"each tag must be 1 to 100 of letters, digits, space and _.:@/+=-, got {shown(tag, 110)}",
            )
    cfg: dict[str, Any] = {}
    if config is not None and not isinstance(config, Mapping):
        raise InvalidInputError("config", "must be a mapping of configuration keys to values")
    for key, value in (config or {}).items():
        if not isinstance(key, str) or not _CONFIG_KEY_RE.fullmatch(key):
            raise InvalidInputError(
                "config", f"key {shown(key, 60)} must be letters, digits and ._- (e.g. oauth.api.key)"
            )
        if isinstance(value, bool) or value is None:
            cfg[key] = value
            continue
        if (isinstance(value, float) and not math.isfinite(value)
                or isinstance(value, int) and abs(value) > 10**18):
            raise InvalidInputError("config", f"value of {key} must be a finite number of at most 18 digits")
        if (not isinstance(value, (str, int, float)) or len(str(value)) > MAX_CONFIG_VALUE
                or not _VALUE_RE.fullmatch(str(value))):
            # The value is never echoed: it may be a secret.
            raise InvalidInputError(
                "config",
                f"value of {key} must be a string of at most {MAX_CONFIG_VALUE} "
                "characters without control characters",
            )
        cfg[key] = str(value)
    for field, key, value in (
        ("api_key", "oauth.api.key", api_key),
        ("api_secret", "oauth.api.secret", api_secret),
        ("callback_url", "oauth.callback.url", callback_url),
    ):
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > MAX_CONFIG_VALUE or not PRINTABLE_RE.fullmatch(value):
            raise InvalidInputError(
                field, f"must be a string of 1 to {MAX_CONFIG_VALUE} printable characters"
            )
        cfg[key] = value
    if "oauth.callback.url" in cfg:
        check_url("callback_url", str(cfg["oauth.callback.url"]))
    for flag in ("use_sandbox", "connect.to.sandbox"):  # QuickBooks' sandbox-company flag, both names
        if flag in cfg:
            if str(cfg[flag]).lower() not in ("true", "false"):
                raise InvalidInputError("config", f"{flag} must be true or false",
                                        hint="Pass config use_sandbox='true' to connect a sandbox company")
            cfg[flag] = str(cfg[flag]).lower()
    if "oauth.user.refresh_interval" in cfg:
        cfg["oauth.user.refresh_interval"] = str(
            _int_field("oauth.user.refresh_interval", cfg["oauth.user.refresh_interval"], minimum=60,
                       maximum=10 * 365 * 86400))
    if "oauth.user.refresh_time" in cfg:
        cfg["oauth.user.refresh_time"] = str(
            _int_field("oauth.user.refresh_time", cfg["oauth.user.refresh_time"], minimum=0, maximum=10**14))
    if "authentication.type" in cfg:
        if str(cfg["authentication.type"]).lower() not in AUTH_TYPES:
            raise InvalidInputError("config", "authentication.type must be oauth1 or oauth2")
        cfg["authentication.type"] = str(cfg["authentication.type"]).lower()
    missing = [k for k in spec.required_config(chosen, auth_type(chosen, cfg)) if cfg.get(k) in (None, "")]
    if missing:
        raise MissingConfigurationError(element, chosen.value, missing)
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200
        or not PRINTABLE_RE.fullmatch(idempotency_key)
    ):
        raise InvalidInputError("idempotency_key", "must be 1 to 200 printable characters")
    wait = None
    if callback_wait_s is not None:
        wait = _int_field("callback_wait_s", callback_wait_s, minimum=1, maximum=MAX_CALLBACK_WAIT_S)
    check_flag("replace", replace)
    return StartRequest(element, chosen, name.strip(), tuple(tag_list), cfg, idempotency_key, wait,
                        validate_customer(customer), replace,
                        renewal_owner=renewal_owner_of(chosen, renewal))


def renewal_owner_of(flow: Flow, renewal: str | RenewalOwner | None) -> RenewalOwner:
    """The renewal owner asked for (``engine``/``platform``), else the flow's default (DESIGN §7)."""
    if renewal is None or renewal == "":
        return DEFAULT_RENEWAL_OWNER[flow]
    try:
        return RenewalOwner(renewal)
    except (ValueError, TypeError):
        raise InvalidInputError("renewal", f"must be engine or platform; got {shown(renewal, 30)}",
                                hint="engine: the engine refreshes and pushes the tokens; platform: "
                                     "Cloud Elements refreshes and the engine watches.") from None
